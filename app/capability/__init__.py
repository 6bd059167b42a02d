"""The server's R5 CapabilityStatement (`/metadata`), generated from what is served: types, search parameters,
interactions, the `graphql` operation and, with auth on, the SMART on FHIR security section."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from app.fhir.model import FHIR_VERSION, SERVED_RESOURCES, SearchParam, spec
from app.settings import Settings

# The statement's own date: when what it describes last changed shape. A constant, so /metadata is
# byte-for-byte stable between restarts (an ETag that means something).
DATE = "2026-11-29"
GRAPHQL_OPERATION = "http://hl7.org/fhir/OperationDefinition/Resource-graphql"
SMART_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"

# FHIR interaction -> how FinGate offers it (GraphQL fields of every served type; `T` is the type).
INTERACTIONS: tuple[tuple[str, str], ...] = (
    ("read", "`T(id: ...)`; NOT_FOUND when missing or deleted"),
    ("vread", "a version by `meta.versionId` from `THistory(id: ...)`, or a versioned reference's `resource`"),
    ("search-type", "`TList(<search parameters>)` and `TConnection(...)` (keyset paging)"),
    ("history-instance", "`THistory(id: ...)`, newest first"),
    ("create", "the mutation `TCreate(res: ...)`: validated, versioned"),
    ("update", "the mutation `TUpdate(id: ..., res: ..., ifMatch: ...)`: `ifMatch` is the expected versionId"),
    ("delete", "the mutation `TDelete(id: ...)`, where the type's status lifecycle allows it"),
)

SCOPES = (
    "Bearer JWTs (HS256, RS256 or ES256) carrying SMART on FHIR scopes, v2 (`user/Claim.rs`, `patient/*.r`,"
    " `system/Claim.cruds`) or v1 (`user/Claim.read`, `user/*.write`): `user/` and `system/` grant a type in"
    " the token's tenant, `patient/` only within the Patient compartment of the token's `patient` (or"
    " `fhirUser`); reads need `r` or `s`; `system/AuditEvent.r` reads the audit log. A token without a read"
    " scope gets no introspection."
)


def _search_param(param: SearchParam) -> dict[str, Any]:
    out: dict[str, Any] = {"name": param.code}
    if param.url:
        out["definition"] = param.url
    out["type"] = param.type
    out["documentation"] = f"{param.description} (GraphQL argument `{param.arg_name}`)".lstrip()
    return out


def _resource(resource_type: str) -> dict[str, Any]:
    params = sorted(spec().served_search_params(resource_type), key=lambda p: p.code)
    return {
        "type": resource_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "interaction": [
            {"code": code, "documentation": how.replace("`T", f"`{resource_type}")} for code, how in INTERACTIONS
        ],
        "versioning": "versioned",
        "readHistory": True,
        "updateCreate": False,
        "searchParam": [_search_param(p) for p in params],
        "operation": [
            {
                "name": "graphql",
                "definition": GRAPHQL_OPERATION,
                "documentation": f"GET or POST [base]/{resource_type}/[id]/$graphql: a query with that resource as its root",
            }
        ],
    }


def _security(settings: Settings) -> dict[str, Any]:
    security: dict[str, Any] = {
        "cors": bool(settings.cors_origins),
        "service": [
            {
                "coding": [{"system": SMART_SERVICE, "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}],
                "text": "OAuth2 bearer tokens with SMART on FHIR scopes",
            }
        ],
        "description": SCOPES,
    }
    uris = [
        {"url": name, "valueUri": value}
        for name, value in (("authorize", settings.smart_authorize_url), ("token", settings.smart_token_url))
        if value
    ]
    if uris:
        security["extension"] = [{"url": OAUTH_URIS, "extension": uris}]
    return security


def _version() -> str:
    try:
        return importlib.metadata.version("fingate")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def capability_statement(settings: Settings, secured: bool) -> dict[str, Any]:
    """The CapabilityStatement as FHIR JSON; `secured`: auth is on (the security section is given)."""
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": (
            "FHIR GraphQL (graphql.html): POST or GET [base]/$graphql (also /graphql) and"
            " [base]/[type]/[id]/$graphql; every interaction below is a GraphQL field or mutation"
        ),
    }
    if secured:
        rest["security"] = _security(settings)
    rest["resource"] = [_resource(t) for t in sorted(SERVED_RESOURCES)]
    rest["operation"] = [
        {
            "name": "graphql",
            "definition": GRAPHQL_OPERATION,
            "documentation": "GET or POST [base]/$graphql: queries and mutations over every served type",
        }
    ]
    return {
        "resourceType": "CapabilityStatement",
        "id": "fingate",
        "name": "FinGate",
        "title": "FinGate: the FHIR R5 financial module over GraphQL",
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": "FinGate",
        "kind": "instance",
        "software": {"name": "FinGate", "version": _version()},
        "implementation": {"description": "FinGate GraphQL gateway"},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [rest],
    }
