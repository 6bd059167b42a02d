"""app/graphql/instance.py: the instance-level rewrite parses, keeps the client's operations, and maps every place in
the rewritten text back to the client's line and column."""

from __future__ import annotations

import re

import pytest
from graphql import OperationDefinitionNode, parse

from app import errors
from app.graphql.instance import VARIABLE, instance_query

TEXTS = [
    "{ id status }",
    "query { id }",
    "query Named { id }",
    "query Named($n: Int = 5, $s: [String!]) { id total { value } }",
    "query($n: Int) @include(if: true) { id }",
    "fragment F on Claim { id }\n{ ...F }\nquery B { status }",
    "# a comment\r\nquery  Spaced\r\n(\r\n  $n: Int\r\n)\r\n{\r\n  id\r\n  status\r\n}",
    "{\n\tidentifier { value }\n}\n\n\n{ id }",
]


def _position(text: str, offset: int) -> tuple[int, int]:
    starts = [0, *(m.end() for m in re.finditer(r"\r\n|[\n\r]", text))]
    line = max(i for i, s in enumerate(starts) if s <= offset)
    return line + 1, offset - starts[line] + 1


@pytest.mark.parametrize("text", TEXTS)
def test_every_operation_runs_inside_the_resource_with_the_id_as_a_variable(text: str) -> None:
    rewritten = instance_query(text, "Claim", "demo-claim-03", {"n": 1})
    assert rewritten is not None and rewritten.variables == {"n": 1, VARIABLE: "demo-claim-03"}
    document = parse(rewritten.text)
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    assert operations and len(operations) == len(
        [d for d in parse(text).definitions if isinstance(d, OperationDefinitionNode)]
    )
    for op in operations:
        assert [v.variable.name.value for v in op.variable_definitions][-1] == VARIABLE
        (root,) = op.selection_set.selections
        assert root.name.value == "Claim" and root.arguments[0].value.name.value == VARIABLE  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", TEXTS)
def test_every_character_of_the_client_maps_back_to_where_it_was(text: str) -> None:
    rewritten = instance_query(text, "Claim", "x", None)
    assert rewritten is not None
    # The client's text is the rewritten one minus the insertions: walk both, character by character.
    inserted = {at for at, _ in rewritten._insertions}
    r = 0
    for o in range(len(text) + 1):
        for at, length in rewritten._insertions:
            if at == o:
                # inside an insertion: every place maps to where it was inserted
                for k in range(length):
                    assert rewritten.original_location(*_position(rewritten.text, r + k)) == _position(text, o)
                r += length
        if o < len(text):
            assert rewritten.text[r] == text[o]
            assert rewritten.original_location(*_position(rewritten.text, r)) == _position(text, o), (o, inserted)
            r += 1
    assert r == len(rewritten.text)


def test_unparseable_text_is_left_to_the_normal_path() -> None:
    assert instance_query("{ id ", "Claim", "x", None) is None


@pytest.mark.parametrize("text", ['mutation { ClaimDelete(id: "x") { id } }', "{ id }\nsubscription S { id }"])
def test_a_mutation_or_subscription_is_refused_where_it_starts(text: str) -> None:
    with pytest.raises(errors.FinGateError) as refused:
        instance_query(text, "Claim", "x", None)
    assert refused.value.code == errors.BAD_USER_INPUT
    (issue,) = refused.value.issues or []
    line = text[: text.index("mutation" if "mutation" in text else "subscription")].count("\n") + 1
    assert issue["location"] == [f"line {line}, column 1"]


def test_unwrap_gives_the_resource_and_paths_from_it() -> None:
    rewritten = instance_query("{ id\n  nope }", "Claim", "x", None)
    assert rewritten is not None
    line, column = _position(rewritten.text, rewritten.text.index("nope"))
    response = {
        "data": {"Claim": {"id": "x"}},
        "errors": [
            {
                "message": "m",
                "locations": [{"line": line, "column": column}],
                "path": ["Claim", "nope"],
                "extensions": {
                    "code": "BAD_USER_INPUT",
                    "operationOutcome": {"issue": [{"location": [f"line {line}, column {column}"]}]},
                },
            },
            {"message": "gone", "path": ["Claim"], "extensions": {"code": "NOT_FOUND"}},
        ],
        "extensions": {"truncated": [{"path": ["Claim", "ClaimResponseList"], "returned": 1, "more": True}]},
    }
    out = rewritten.unwrap(response)
    assert out["data"] == {"id": "x"}
    first, second = out["errors"]
    assert first["locations"] == [{"line": 2, "column": 3}] and first["path"] == ["nope"]
    assert first["extensions"]["operationOutcome"]["issue"][0]["location"] == ["line 2, column 3"]
    assert "path" not in second
    assert out["extensions"]["truncated"][0]["path"] == ["ClaimResponseList"]
