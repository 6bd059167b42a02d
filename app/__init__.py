"""FinGate: a GraphQL gateway for the HL7 FHIR R5 financial module, on MongoDB (layers: README "Architecture")."""
