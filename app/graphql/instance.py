"""Instance-level `$graphql` (`[base]/Claim/x/$graphql`): a query whose root is one resource, run as the
same query inside `Claim(id: ...)` and unwrapped, with error locations and paths as the client wrote them.

The rewrite is textual but placed by the parsed document's own token offsets, so everything after it
(persisted queries, parse and validation caches, limits, both execution paths, the plan cache) runs as for
`/graphql`. The id travels as a variable: one text, one cached plan, for every id of a type.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode, OperationType, TokenKind, parse

from app import errors

VARIABLE = "_fingate_id"
_LINE_BREAK = re.compile(r"\r\n|[\n\r]")


def _line_starts(text: str) -> list[int]:
    """The offset each line starts at, as graphql-core counts lines (`\\r\\n`, `\\n` or `\\r`)."""
    return [0, *(m.end() for m in _LINE_BREAK.finditer(text))]


@dataclass
class InstanceQuery:
    """A query rewritten to run at the root of `resource_type` `id`, and how to give its answer back."""

    resource_type: str
    text: str  # the rewritten query
    variables: dict[str, Any]
    _insertions: list[tuple[int, int]] = field(default_factory=list)  # (offset in the original, length), in order
    _original_lines: list[int] = field(default_factory=list)
    _rewritten_lines: list[int] = field(default_factory=list)

    def original_location(self, line: int, column: int) -> tuple[int, int]:
        """A (line, column) of the rewritten text -> the same place in the client's text; inserted text maps
        to where it was inserted."""
        offset = self._rewritten_lines[min(line, len(self._rewritten_lines)) - 1] + column - 1
        shift = 0
        for at, length in self._insertions:
            if offset < at + shift:
                break
            if offset < at + shift + length:
                offset = at + shift
                break
            shift += length
        offset -= shift
        row = bisect.bisect_right(self._original_lines, offset) - 1
        return row + 1, offset - self._original_lines[row] + 1

    def unwrap(self, response: dict[str, Any]) -> dict[str, Any]:
        """The formatted response of the rewritten query -> the response of the client's query."""
        data = response.get("data")
        response["data"] = data.get(self.resource_type) if isinstance(data, dict) else None
        for error in response.get("errors") or ():
            if "locations" in error:
                error["locations"] = [
                    dict(zip(("line", "column"), self.original_location(loc["line"], loc["column"]), strict=True))
                    for loc in error["locations"]
                ]
                outcome = error.get("extensions", {}).get("operationOutcome")
                for issue in outcome["issue"] if outcome else ():
                    if "location" in issue:
                        issue["location"] = [
                            f"line {loc['line']}, column {loc['column']}" for loc in error["locations"]
                        ]
            path = error.get("path")
            if path and path[0] == self.resource_type:
                if len(path) > 1:
                    error["path"] = path[1:]
                else:
                    del error["path"]
        for note in (response.get("extensions") or {}).get("truncated") or ():
            if note["path"][:1] == [self.resource_type]:
                note["path"] = note["path"][1:]
        return response


def instance_query(text: str, resource_type: str, id: str, variables: dict[str, Any] | None) -> InstanceQuery | None:
    """`text` with every operation's selection inside `resource_type(id: $_fingate_id)`.

    None when `text` does not parse: the normal path then reports the syntax error where the client made it.
    A mutation or subscription is refused: an instance-level `$graphql` reads its resource.
    """
    try:
        document = parse(text)
    except GraphQLError:
        return None
    insertions: list[tuple[int, str]] = []
    for op in document.definitions:
        if not isinstance(op, OperationDefinitionNode):
            continue
        if op.operation is not OperationType.QUERY:
            message = (
                f"the instance-level $graphql runs queries on its {resource_type}; send a {op.operation.value}"
                " to [base]/$graphql"
            )
            start = op.loc.start if op.loc else 0
            starts = _line_starts(text)
            row = bisect.bisect_right(starts, start) - 1
            where = f"line {row + 1}, column {start - starts[row] + 1}"
            issue = errors.outcome_issue(message, code="not-supported")
            issue["location"] = [where]
            raise errors.FinGateError(errors.BAD_USER_INPUT, message, issues=[issue])
        assert op.loc is not None and op.selection_set.loc is not None
        declaration = f"${VARIABLE}: ID!"
        if op.loc.start_token.kind is TokenKind.BRACE_L:  # the shorthand `{ ... }`
            insertions.append((op.loc.start, f"query(${VARIABLE}: ID!)"))
        elif op.variable_definitions:
            last = op.variable_definitions[-1].loc
            assert last is not None
            insertions.append((last.end, f", {declaration}"))
        else:
            after = op.name.loc.end if op.name is not None and op.name.loc is not None else op.loc.start_token.end
            insertions.append((after, f"({declaration})"))
        insertions.append((op.selection_set.loc.start + 1, f"{resource_type}(id: ${VARIABLE}) {{"))
        insertions.append((op.selection_set.loc.end - 1, "}"))
    insertions.sort(key=lambda i: i[0])
    pieces, previous = [], 0
    for at, inserted in insertions:
        pieces += [text[previous:at], inserted]
        previous = at
    pieces.append(text[previous:])
    rewritten = "".join(pieces)
    return InstanceQuery(
        resource_type,
        rewritten,
        {**(variables or {}), VARIABLE: id},
        [(at, len(inserted)) for at, inserted in insertions],
        _line_starts(text),
        _line_starts(rewritten),
    )
