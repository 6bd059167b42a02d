"""The FHIR R5 knowledge everything else stands on: the spec model, served types, references, resources."""
