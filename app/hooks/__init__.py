"""FHIR R5 Subscriptions out: the built-in financial topics, rest-hook notifications (signed), their dispatcher."""
