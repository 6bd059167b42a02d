"""FHIR GraphQL's data re-organization directives: @flatten, @first, @singleton, @slice(path:).

They change the shape of a response in ways a GraphQL type cannot say (a node's children merged into its
parent, a list answered as one object, fields renamed per slice), so both execution paths answer the
operation as written without them, and `Reshape` re-organizes that answer: one function, after either path,
so the compiled path's answer stays the reference path's. What only the stored data has (the value a slice
path reads) is noted while resolving (app.graphql.lists)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    BooleanValueNode,
    DirectiveLocation,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLArgument,
    GraphQLDirective,
    GraphQLError,
    GraphQLNonNull,
    GraphQLString,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    VariableNode,
)
from strawberry.extensions import SchemaExtension

from app import elements, errors
from app.graphql.lists import FIRST, INDEX, SLICE

FLATTEN, SINGLETON = "flatten", "singleton"
NAMES = frozenset({FLATTEN, FIRST, SINGLETON, SLICE})

DIRECTIVES = (
    GraphQLDirective(
        FLATTEN,
        [DirectiveLocation.FIELD],
        description=(
            "FHIR GraphQL: this field's node is left out and its selected children are put in its parent; "
            "flattening a list makes each child a list of that child's values from every item."
        ),
    ),
    GraphQLDirective(
        FIRST,
        [DirectiveLocation.FIELD],
        description="FHIR GraphQL: a list answered as its first item (null when empty), FHIRPath's `first()`.",
    ),
    GraphQLDirective(
        SINGLETON,
        [DirectiveLocation.FIELD],
        description=(
            "FHIR GraphQL: a list (or, inside a flattened list, a child) answered as one value; "
            "more than one is a BAD_USER_INPUT error."
        ),
    ),
    GraphQLDirective(
        SLICE,
        [DirectiveLocation.FIELD],
        args={
            "path": GraphQLArgument(
                GraphQLNonNull(GraphQLString),
                description="A FHIRPath evaluated on each item (`$index`: its position), naming its slice.",
            )
        },
        description=(
            "FHIR GraphQL: each item's children are answered as `child.<slice>`, the slice named by `path` "
            "(with @flatten: in the parent, one field per child and slice)."
        ),
    ),
)


_USES: dict[str, bool] = {}  # by query text (the parser cache maps a text to one document), bounded
_MAX_USES = 2048


def uses_directives(document: DocumentNode, query: str | None = None) -> bool:
    """Whether any field of the document carries one of these directives (most documents do not)."""
    if query is not None and (known := _USES.get(query)) is not None:
        return known
    found = _uses(document)
    if query is not None:
        if len(_USES) >= _MAX_USES:
            _USES.clear()
        _USES[query] = found
    return found


def _uses(document: DocumentNode) -> bool:
    return any(
        d.name.value in NAMES
        for definition in document.definitions
        for node in _fields(getattr(definition, "selection_set", None))
        for d in node.directives or ()
    )


def _fields(selection_set: SelectionSetNode | None) -> Iterator[FieldNode]:
    for sel in selection_set.selections if selection_set else ():
        if isinstance(sel, FieldNode):
            yield sel
        yield from _fields(getattr(sel, "selection_set", None))


@dataclass
class _Directives:
    flatten: bool = False
    first: bool = False
    singleton: bool = False
    slice: str | None = None


@dataclass
class _Reshaper:
    fragments: dict[str, FragmentDefinitionNode]
    variables: dict[str, Any]
    slices: dict[tuple[Any, ...], list[str]]
    problems: list[GraphQLError] = field(default_factory=list)

    # -- reading the document -----------------------------------------------------------------

    def _value(self, node: Any) -> Any:
        if isinstance(node, VariableNode):
            return self.variables.get(node.name.value)
        if isinstance(node, BooleanValueNode | StringValueNode):
            return node.value
        return None

    def _included(self, node: Any) -> bool:
        for d in node.directives or ():
            if d.name.value in ("skip", "include") and d.arguments:
                flag = self._value(d.arguments[0].value)
                if (d.name.value == "skip") == bool(flag):
                    return False
        return True

    def grouped(self, selection_sets: list[SelectionSetNode]) -> dict[str, list[FieldNode]]:
        """The field nodes of each response key, across fragments: a key's directives are those of any of its nodes."""
        out: dict[str, list[FieldNode]] = {}

        def walk(selection_set: SelectionSetNode) -> None:
            for sel in selection_set.selections:
                if not self._included(sel):
                    continue
                if isinstance(sel, FieldNode):
                    out.setdefault((sel.alias or sel.name).value, []).append(sel)
                elif isinstance(sel, InlineFragmentNode):
                    walk(sel.selection_set)
                elif isinstance(sel, FragmentSpreadNode) and sel.name.value in self.fragments:
                    walk(self.fragments[sel.name.value].selection_set)

        for s in selection_sets:
            walk(s)
        return out

    def directives(self, nodes: list[FieldNode]) -> _Directives:
        found = _Directives()
        for node in nodes:
            for d in node.directives or ():
                name = d.name.value
                if name == FLATTEN:
                    found.flatten = True
                elif name == FIRST:
                    found.first = True
                elif name == SINGLETON:
                    found.singleton = True
                elif name == SLICE and d.arguments:
                    path = self._value(d.arguments[0].value)
                    found.slice = path if isinstance(path, str) else None
        return found

    # -- re-organizing the answer -------------------------------------------------------------

    def object(
        self,
        source: dict[str, Any],
        groups: dict[str, list[FieldNode]],
        target: dict[str, Any],
        listed: bool,
        suffix: str,
        path: list[Any],
        merged: bool = False,
    ) -> None:
        """Puts `source`'s fields, re-organized, in `target`; `listed`: each goes into a list (a flattened list's
        item), `suffix`: each name gets it (a slice's), `merged`: `target` is a flattened node's parent, where a
        field without a value is left out (as HAPI FHIR answers)."""
        for key, value in source.items():
            nodes = groups.get(key, [])
            found = self.directives(nodes)
            children = [n.selection_set for n in nodes if n.selection_set]
            child_groups = self.grouped(children) if children else None
            is_list = isinstance(value, list)
            items = value if is_list else ([] if value is None else [value])
            if found.first and is_list:
                items, is_list = items[:1], False
            labels = self._labels(found.slice, path + [key], items) if found.slice is not None else None
            if found.flatten and child_groups is not None:
                for i, item in enumerate(items):
                    if isinstance(item, dict):
                        where = path + [key, i] if is_list else path + [key]
                        tail = suffix + "." + labels[i] if labels is not None else suffix
                        self.object(item, child_groups, target, listed or is_list, tail, where, merged=True)
                continue
            out = [
                self._item(
                    item, child_groups, [*path, key, i] if isinstance(value, list) else [*path, key], labels, i, suffix
                )
                for i, item in enumerate(items)
            ]
            single = found.singleton or found.first
            if found.singleton and len(out) > 1:
                self._problem(path + [key], f"@singleton on {key!r}: {len(out)} values, at most one may be")
                out = out[:0]
            answer: Any = out if is_list and not single else (out[0] if out else None)
            if merged and answer is None:
                continue
            # In a flattened list's item, @first still adds one value a item; @singleton wants one in all.
            self._put(target, key + suffix, answer, listed and not found.singleton, found.singleton, path + [key])

    def _item(
        self,
        item: Any,
        groups: dict[str, list[FieldNode]] | None,
        path: list[Any],
        labels: list[str] | None,
        i: int,
        suffix: str,
    ) -> Any:
        if groups is None or not isinstance(item, dict):
            return item
        new: dict[str, Any] = {}
        self.object(item, groups, new, False, f"{suffix}.{labels[i]}" if labels is not None else "", path)
        return new

    def _labels(self, expression: str, path: list[Any], items: list[Any]) -> list[str]:
        noted = self.slices.get(tuple(path))
        if noted is not None and len(noted) == len(items):
            return noted
        if expression == INDEX:
            return [str(i) for i in range(len(items))]
        # Not a repeating element (a list of resources): the path reads what the query selected.
        return [elements.label(expression, item) for item in items]

    def _put(self, target: dict[str, Any], name: str, value: Any, listed: bool, single: bool, path: list[Any]) -> None:
        if listed:  # a child of a flattened list: one list of every item's values (none: no field, as HAPI)
            values = value if isinstance(value, list) else [] if value is None else [value]
            if not values and name not in target:
                return
            collected = target.setdefault(name, [])
            if not isinstance(collected, list):
                collected = target[name] = [collected]
            collected.extend(values)
            return
        if name not in target or target[name] is None:
            target[name] = value
        elif value is not None:  # two flattened nodes gave this name a value each
            if single:
                self._problem(path, f"@singleton on {name!r}: more than one value")
                return
            existing = target[name] if isinstance(target[name], list) else [target[name]]
            target[name] = existing + (value if isinstance(value, list) else [value])

    def _problem(self, path: list[Any], message: str) -> None:
        self.problems.append(GraphQLError(message, path=path, original_error=errors.bad_input(message)))


def reshape(
    document: DocumentNode,
    operation_name: str | None,
    variables: dict[str, Any] | None,
    data: dict[str, Any],
    slices: dict[tuple[Any, ...], list[str]] | None = None,
) -> tuple[dict[str, Any], list[GraphQLError]]:
    """The answer `data` of the document's operation re-organized by its directives, and any errors they raise.

    Fields are matched to the answer by response key; a key's directives are those on any of its nodes
    (fragments included). Error and `extensions.truncated` paths stay those of the operation as written."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    operation = next(
        (o for o in operations if operation_name is None or (o.name and o.name.value == operation_name)), None
    )
    if operation is None:
        return data, []
    given = dict(variables or {})
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        if name not in given and isinstance(definition.default_value, BooleanValueNode | StringValueNode):
            given[name] = definition.default_value.value
    shaper = _Reshaper(fragments, given, slices or {})
    out: dict[str, Any] = {}
    shaper.object(data, shaper.grouped([operation.selection_set]), out, False, "", [])
    return out, shaper.problems


class Reshape(SchemaExtension):
    """Re-organizes an answer by the operation's FHIR directives, once either execution path has answered."""

    def on_execute(self) -> Iterator[None]:
        yield
        ec = self.execution_context
        result, document = ec.result, ec.graphql_document
        answered = getattr(result, "data", None)
        if result is None or document is None or not answered or not uses_directives(document, ec.query):
            return
        slices = getattr(ec.context, "slices", None)
        result.data, problems = reshape(document, ec.operation_name, ec.variables, answered, slices)
        if problems:
            result.errors = [*(result.errors or ()), *problems]
