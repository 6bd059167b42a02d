"""The workloads' GraphQL operations: W1 selects every field the data holds, W2 what a billing list shows."""

from __future__ import annotations

from typing import Any

from app.fhir.values import Resource


def _merged(values: list[Any]) -> dict[str, list[Any]]:
    keys: dict[str, list[Any]] = {}
    for value in values:
        for k, v in value.items():
            keys.setdefault(k, []).extend(v if isinstance(v, list) else [v])
    return keys


def selection(values: list[Resource]) -> str:
    """A selection set asking for every key present in any of `values`; `resource` becomes an inline fragment."""
    parts = []
    for key, found in _merged(values).items():
        objects = [v for v in found if isinstance(v, dict)]
        if key == "resource":
            parts.append(f"resource {{ ... on {objects[0]['resourceType']} {{ {selection(objects)} }} }}")
        elif objects:
            parts.append(f"{key} {{ {selection(objects)} }}")
        else:
            parts.append(key)
    return " ".join(parts)


def expanded(reconciliation: Resource, found: dict[str, Resource]) -> Resource:
    """The reconciliation with each allocation's target and response carrying its resource (the W1 shape)."""
    allocations = [
        {**a, **{k: {**a[k], "resource": found[a[k]["reference"]]} for k in ("target", "response")}}
        for a in reconciliation["allocation"]
    ]
    return {**reconciliation, "allocation": allocations}


def w1(id: str, fields: str) -> str:
    return f'{{ PaymentReconciliation(id: "{id}") {{ {fields} }} }}'


_W2_FIELDS = """
  id status created date outcome disposition
  amount { value currency }
  paymentIssuer { reference display }
  paymentIdentifier { system value }
  allocation {
    identifier { system value }
    date
    amount { value currency }
    submitter { reference display }
    payee { reference display }
    target { reference resource { ... on Claim { id status created patient { reference } total { value currency } } } }
    response { reference resource { ... on ClaimResponse { id outcome disposition payment { amount { value currency } } } } }
  }
"""


def w2(payer: str, count: int) -> str:
    return f'{{ PaymentReconciliationList(payment_issuer: "{payer}", _count: {count}) {{ {_W2_FIELDS} }} }}'


# W1's payment with each allocated Claim's billing view: one settlement aggregate per level, whatever its size.
W1_BILLING = (
    "id billing { allocated { currency value } unallocated { currency value } } "
    "allocation { target { resource { ... on Claim { id billing { billed { currency value } "
    "paid { currency value } outstanding { currency value } } } } } }"
)


def w3(id: str) -> str:
    return f'{{ Claim(id: "{id}") {{ id status }} }}'


W4 = "mutation Create($res: ClaimInput!) { ClaimCreate(res: $res) { id status meta { versionId } total { value currency } } }"
