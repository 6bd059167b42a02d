"""FHIR `_filter` expressions and search modifiers, compiled to the same `_search` filters as plain search."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from app.errors import FinGateError, bad_input
from app.fhir.model import SERVED
from app.store import search
from app.store.search import QUERIES, Param

FILTER = "_filter"
MAX_FILTER_LENGTH = 4096
MAX_DEPTH = 20  # nested parentheses, `not`s and alternating and/or; MongoDB limits a filter's depth
MAX_CHAINS = 10  # chained parameters in one expression: each costs a query first
MAX_CHAIN_MATCHES = 1000  # a chain's first query may find this many targets; more is an error, never a cut
NEVER: dict[str, Any] = {"_id": {"$in": []}}

# (type, id-list query) -> the ids of `type` matching it within the caller's view, at most `limit`.
IdsOf = Callable[[str, dict[str, Any], int], Awaitable[list[str]]]


@cache
def _parser() -> Lark:
    grammar = (Path(__file__).with_name("filter.lark")).read_text()
    return Lark(grammar, parser="lalr", maybe_placeholders=False)


def _escape(text: str) -> str:
    """A literal as the plain-search value syntax reads it (`search._unescape` undoes this)."""
    return text.replace("\\", "\\\\").replace(",", "\\,")


def _contains(p: Param, value: str) -> dict[str, Any]:
    return {p.key: {"$elemMatch": {"$regex": re.escape(search.normalize(value))}}}


def _ends(p: Param, value: str) -> dict[str, Any]:
    return {p.key: {"$elemMatch": {"$regex": re.escape(search.normalize(value)) + "$"}}}


def _equal(p: Param, value: str) -> dict[str, Any]:
    return {p.key: search.normalize(value)}


def _plain(p: Param, value: str) -> dict[str, Any]:
    return QUERIES[p.type](p, _escape(value))


_FORMS = {
    "date": search.DATE_FORMS,
    "number": "a number",
    "quantity": "a number, number|system|code or number||code (Money: the currency as code)",
}


def _prefixed(op: str) -> Callable[[Param, str], dict[str, Any]]:
    """The plain search's prefix `op`, its message about the value saying what `_filter` takes."""

    def compile_(p: Param, value: str) -> dict[str, Any]:
        try:
            return QUERIES[p.type](p, op + _escape(value))
        except FinGateError:
            raise bad_input(f"{value!r} is not a {p.type}; use {_FORMS[p.type]}") from None

    return compile_


def _negated(positive: Callable[[Param, str], dict[str, Any]]) -> Callable[[Param, str], dict[str, Any]]:
    return lambda p, value: {"$nor": [positive(p, value)]}


_ORDERED = {op: _prefixed(op) for op in search.PREFIXES}

# Parameter type -> `_filter` operator -> (parameter, literal) -> Mongo clause. `pr` is every type's (see _present).
OPERATORS: dict[str, dict[str, Callable[[Param, str], dict[str, Any]]]] = {
    "string": {
        "eq": _equal,
        "ne": _negated(_equal),
        "sw": _plain,
        "co": _contains,
        "ew": _ends,
    },
    "token": {"eq": _plain, "ne": _negated(_plain)},
    "reference": {"eq": _plain, "ne": _negated(_plain)},
    "uri": {"eq": _plain, "ne": _negated(_plain)},
    "id": {"eq": _plain, "ne": _negated(_plain)},
    "date": _ORDERED,
    "number": _ORDERED,
    "quantity": _ORDERED,
}
PRESENT = "pr"


def _present(p: Param, value: str, where: str) -> dict[str, Any]:
    if value not in ("true", "false"):
        raise bad_input(f"{FILTER}: {where}: `pr` takes true or false, not {value!r}", expression=FILTER)
    if p.type == "id":
        return {} if value == "true" else NEVER
    return {p.key: {"$exists": value == "true"}}


def _literal(token: Token) -> str:
    if token.type == "STRING":
        return re.sub(r"\\(.)", r"\1", token.value[1:-1], flags=re.DOTALL)
    return str(token.value)


def _syntax_error(expression: str, e: UnexpectedInput) -> FinGateError:
    where = f"line {e.line}, column {e.column}"
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        lines = expression.split("\n")
        where = f"line {len(lines)}, column {len(lines[-1]) + 1}"
        what = "the expression ends too early"
    elif isinstance(e, UnexpectedToken):
        what = f"unexpected {e.token.value!r}"
    elif isinstance(e, UnexpectedCharacters):
        what = f"unexpected {e.char!r}"
    else:
        what = "not a filter"
    return bad_input(
        f"{FILTER}: syntax error at {where}: {what}; write `param op value` joined by and/or, e.g. "
        f'status eq active and (created ge 2024-01-01 or not(provider.name co "acme"))',
        expression=FILTER,
    )


def parse(expression: str) -> Tree[Token]:
    """The syntax tree of a `_filter` expression, or BAD_USER_INPUT at the line and column of the mistake."""
    if len(expression) > MAX_FILTER_LENGTH:
        raise bad_input(f"{FILTER}: longer than {MAX_FILTER_LENGTH} characters", expression=FILTER)
    try:
        return _parser().parse(expression)
    except UnexpectedInput as e:
        raise _syntax_error(expression, e) from None


def _operands(tree: Tree[Token]) -> list[Tree[Token]]:
    """The operands of `a or b or c` as one list (the grammar nests them), so the Mongo filter stays shallow."""
    out, stack = [], [tree]
    while stack:
        t = stack.pop()
        if t is tree or (t.data == tree.data and tree.data != "negation"):
            stack.extend(reversed(t.children))  # type: ignore[arg-type]
        else:
            out.append(t)
    return out


class _Compiler:
    """One `_filter` expression's Mongo filter; chains ask `ids_of` for their targets first."""

    def __init__(self, ids_of: IdsOf) -> None:
        self.ids_of = ids_of
        self.chains = 0

    async def node(self, resource_type: str, tree: Tree[Token], depth: int = 0) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise bad_input(f"{FILTER}: nested deeper than {MAX_DEPTH} levels", expression=FILTER)
        if tree.data == "test":
            path, op, value = tree.children
            names: list[Token] = path.children  # type: ignore[union-attr,assignment]
            return await self.test(resource_type, [str(n) for n in names], str(op).lower(), _literal(value), names[0])  # type: ignore[arg-type]
        parts = [await self.node(resource_type, child, depth + 1) for child in _operands(tree)]
        if tree.data == "negation":
            return {"$nor": parts}
        return {"$and" if tree.data == "all" else "$or": parts}

    async def test(self, resource_type: str, names: list[str], op: str, value: str, at: Token) -> dict[str, Any]:
        where = f"{'.'.join(names)} at line {at.line}, column {at.column}"
        p = _param(resource_type, names[0], where)
        if len(names) > 1:
            return await self.chain(resource_type, p, names[1:], op, value, at, where)
        if op == PRESENT:
            return _present(p, value, where)
        compile_ = OPERATORS[p.type].get(op)
        if compile_ is None:
            takes = ", ".join([*OPERATORS[p.type], PRESENT])
            raise bad_input(f"{FILTER}: {where}: a {p.type} parameter takes {takes}, not {op!r}", expression=FILTER)
        try:
            return compile_(p, value)
        except FinGateError as e:
            raise bad_input(f"{FILTER}: {where}: {e.message}", expression=FILTER) from None

    async def chain(
        self, resource_type: str, p: Param, rest: list[str], op: str, value: str, at: Token, where: str
    ) -> dict[str, Any]:
        if p.type != "reference":
            raise bad_input(
                f"{FILTER}: {where}: only a reference parameter can be chained; {p.code} is a {p.type}",
                expression=FILTER,
            )
        targets = [t for t in p.targets if t in SERVED and rest[0] in search.search_params(t)]
        if not targets:
            raise bad_input(
                f"{FILTER}: {where}: no resource {p.code} points at ({', '.join(p.targets)}) has a "
                f"search parameter {rest[0]!r}",
                expression=FILTER,
            )
        self.chains += 1
        if self.chains > MAX_CHAINS:
            raise bad_input(f"{FILTER}: more than {MAX_CHAINS} chained parameters", expression=FILTER)
        found: list[str] = []
        for target in targets:
            query = await self.test(target, rest, op, value, at)
            ids = await self.ids_of(target, query, MAX_CHAIN_MATCHES + 1 - len(found))
            found.extend(f"{target}/{id}" for id in ids)
            if len(found) > MAX_CHAIN_MATCHES:
                raise bad_input(
                    f"{FILTER}: {where}: the chain matches more than {MAX_CHAIN_MATCHES} resources; "
                    "narrow it, or search the other way round",
                    expression=FILTER,
                )
        return {p.key: {"$in": found}}


def _param(resource_type: str, code: str, where: str) -> Param:
    p = search.search_params(resource_type).get(code)
    if p is None:
        known = ", ".join(search.search_params(resource_type))
        raise bad_input(
            f"{FILTER}: {where}: {resource_type} has no search parameter {code!r}; known: {known}",
            expression=FILTER,
        )
    return p


async def compile_expression(resource_type: str, expression: str, ids_of: IdsOf) -> dict[str, Any]:
    """The Mongo filter of a `_filter` expression on `resource_type`."""
    if not isinstance(expression, str) or not expression.strip():
        raise bad_input(f"{FILTER}: empty; write `param op value`, e.g. status eq active", expression=FILTER)
    return await _Compiler(ids_of).node(resource_type, parse(expression))


# -- modifiers on plain search parameters ----------------------------------------------------------


def _missing(p: Param, value: str) -> dict[str, Any]:
    if value not in ("true", "false"):
        raise bad_input(f"{p.code}:missing takes true or false, not {value!r}", expression=p.code)
    if p.type == "id":
        return NEVER if value == "true" else {}
    return {p.key: {"$exists": value == "false"}}


def _exact(p: Param, value: str) -> dict[str, Any]:
    # The indexed folded value narrows; the stored text as written decides.
    return {"$and": [_equal(p, value), {f"{p.key}:exact": value}]}


def _text(p: Param, value: str) -> dict[str, Any]:
    return QUERIES["string"](replace(p, key=f"{p.key}:text"), _escape(value))


def _identifier(p: Param, value: str) -> dict[str, Any]:
    return QUERIES["token"](replace(p, key=f"{p.key}:identifier"), _escape(value))


# Modifier -> the parameter types taking it -> (parameter, one value) -> Mongo clause; search.MODIFIED holds the
# index values of exact, text and identifier.
MODIFIERS: dict[str, dict[str, Callable[[Param, str], dict[str, Any]]]] = {
    "missing": dict.fromkeys(("token", "string", "date", "reference", "quantity", "number", "uri", "id"), _missing),
    "not": dict.fromkeys(("token", "reference", "uri", "id"), _plain),
    "exact": {"string": _exact},
    "contains": {"string": _contains},
    "text": {"token": _text},
    "identifier": {"reference": _identifier},
}
NEGATING = {"not"}  # its values' clauses are NORed, not ORed


def compile_modifier(resource_type: str, code: str, modifier: str, raw: str) -> dict[str, Any]:
    """One `param:modifier=value` search: commas OR the values, like a plain argument (`:not` NORs them)."""
    p = search.search_params(resource_type).get(code)
    if p is None:
        known = ", ".join(search.search_params(resource_type))
        raise bad_input(f"Unknown search parameter {code!r} for {resource_type}; known: {known}", expression=code)
    compile_ = MODIFIERS.get(modifier, {}).get(p.type)
    if compile_ is None:
        takes = [m for m, types in MODIFIERS.items() if p.type in types]
        raise bad_input(
            f"{code}:{modifier}: a {p.type} parameter takes the modifiers {', '.join(takes)}", expression=code
        )
    values = [search._unescape(v) for v in search._split(raw, ",")]
    if any(v == "" for v in values):
        raise bad_input(f"{code}:{modifier}: empty value in {raw!r}", expression=code)
    ors = [compile_(p, v) for v in values]
    if modifier in NEGATING:
        return {"$nor": ors}
    return ors[0] if len(ors) == 1 else {"$or": ors}


async def compile_query(resource_type: str, params: dict[str, str], ids_of: IdsOf) -> dict[str, Any]:
    """`search.compile_filter` extended: `_filter` and `code:modifier` keys, ANDed with the plain parameters."""
    plain = {k: v for k, v in params.items() if k != FILTER and ":" not in k}
    clauses = [search.compile_filter(resource_type, plain)]
    for key, value in params.items():
        if ":" in key:
            code, modifier = key.split(":", 1)
            clauses.append(compile_modifier(resource_type, code, modifier, value))
    if FILTER in params:
        clauses.append(await compile_expression(resource_type, params[FILTER], ids_of))
    clauses = [c for c in clauses if c]
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


__all__ = ["MAX_CHAIN_MATCHES", "compile_expression", "compile_modifier", "compile_query", "parse"]
