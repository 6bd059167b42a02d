"""Baselines (a) raw PyMongo and (b) graphql-core on a hand-built schema trimmed to the fields a query selects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from graphql import (
    FieldNode,
    GraphQLInputObjectType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    build_schema,
    get_named_type,
    parse,
    print_type,
)
from pymongo import AsyncMongoClient, monitoring

from app.fhir.values import Resource
from app.store import search

_BUILTIN = {"String", "Int", "Float", "Boolean", "ID"}


class _Trim:
    """The types and fields a set of operations touches in the full schema; inputs are kept whole."""

    def __init__(self, full: GraphQLSchema) -> None:
        self.full = full
        self.fields: dict[str, dict[str, None]] = {}
        self.members: dict[str, dict[str, None]] = {}
        self.whole: dict[str, GraphQLNamedType] = {}

    def operation(self, op: OperationDefinitionNode) -> None:
        root = self.full.mutation_type if op.operation.value == "mutation" else self.full.query_type
        assert root is not None
        self.selections(root, op.selection_set)

    def selections(self, parent: GraphQLNamedType, selection_set: SelectionSetNode | None) -> None:
        for node in selection_set.selections if selection_set else ():
            if isinstance(node, InlineFragmentNode):
                assert node.type_condition is not None
                member = self.full.type_map[node.type_condition.name.value]
                self.members.setdefault(parent.name, {})[member.name] = None
                self.selections(member, node.selection_set)
            elif isinstance(node, FieldNode):
                self.field(parent, node)

    def field(self, parent: GraphQLNamedType, node: FieldNode) -> None:
        assert isinstance(parent, GraphQLObjectType)
        definition = parent.fields[node.name.value]
        self.fields.setdefault(parent.name, {})[node.name.value] = None
        for arg in definition.args.values():
            self.keep(get_named_type(arg.type))
        named = get_named_type(definition.type)
        if isinstance(named, GraphQLObjectType | GraphQLUnionType):
            self.selections(named, node.selection_set)
        else:
            self.keep(named)

    def keep(self, named: GraphQLNamedType) -> None:
        if named.name in _BUILTIN or named.name in self.whole:
            return
        self.whole[named.name] = named
        if isinstance(named, GraphQLInputObjectType):
            for f in named.fields.values():
                self.keep(get_named_type(f.type))

    def sdl(self) -> str:
        out = []
        for type_name, names in self.fields.items():
            definition = self.full.type_map[type_name]
            assert isinstance(definition, GraphQLObjectType)
            out.append(f"type {type_name} {{\n" + "".join(_field_sdl(n, definition.fields[n]) for n in names) + "}")
        out += [f"union {u} = {' | '.join(m)}" for u, m in self.members.items()]
        out += [print_type(t) for t in self.whole.values()]
        if "Query" not in self.fields:
            out.append("type Query {\n  unused: String\n}")  # a schema needs a query type
        return "\n\n".join(out) + "\n"


def _field_sdl(name: str, field: Any) -> str:
    args = ", ".join(f"{a}: {arg.type}" for a, arg in field.args.items())
    return f"  {name}{f'({args})' if args else ''}: {field.type}\n"


def trimmed_sdl(full: GraphQLSchema, sources: list[str]) -> str:
    """SDL holding exactly the object fields `sources` select (and the input types their arguments take, whole)."""
    trim = _Trim(full)
    for source in sources:
        for definition in parse(source).definitions:
            assert isinstance(definition, OperationDefinitionNode)
            trim.operation(definition)
    return trim.sdl()


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _parse_reference(reference: Resource) -> tuple[str, str] | None:
    parts = str(reference.get("reference", "")).split("/")
    return (parts[0], parts[1]) if len(parts) == 2 else None


def _created(res: Resource) -> Resource:
    return {"resourceType": "Claim", **res, "id": uuid.uuid4().hex, "meta": {"versionId": "1"}}


def engine_schema(
    sdl: str, roots: dict[str, Callable[..., Any]], found: dict[tuple[str, str], Resource]
) -> GraphQLSchema:
    """graphql-core's schema from `sdl`: dict-reading default resolvers, `roots` for root fields,
    `Reference.resource` a lookup in the pre-fetched `found`, unions told apart by `resourceType`."""
    built = build_schema(sdl)
    for root in (built.query_type, built.mutation_type):
        for name, field in (root.fields if root else {}).items():
            field.resolve = roots.get(name)
    reference = built.type_map.get("Reference")
    if isinstance(reference, GraphQLObjectType) and "resource" in reference.fields:
        reference.fields["resource"].resolve = lambda ref, info: found.get(_parse_reference(ref))  # type: ignore[arg-type]
    for t in built.type_map.values():
        if isinstance(t, GraphQLUnionType):
            t.resolve_type = lambda value, info, union: value["resourceType"]
    decimal = built.type_map.get("Decimal")
    if isinstance(decimal, GraphQLScalarType):
        decimal.serialize = decimal.coerce_output_value = str  # type: ignore[method-assign]
        decimal.parse_value = decimal.coerce_input_value = _decimal  # type: ignore[method-assign]
    return built


def roots_for(found: dict[tuple[str, str], Resource], listed: list[Resource]) -> dict[str, Callable[..., Any]]:
    """Root resolvers reading the pre-fetched documents: the engine floor, no I/O."""
    return {
        "PaymentReconciliation": lambda _, info, id: found[("PaymentReconciliation", id)],
        "PaymentReconciliationList": lambda _, info, **args: listed,
        "Claim": lambda _, info, id: found[("Claim", id)],
        "ClaimCreate": lambda _, info, res: _created(res),
    }


def bson_ready(value: Any) -> Any:
    """`Decimal` as `Decimal128`, which default codecs store (the app does it with a type codec)."""
    if isinstance(value, dict):
        return {k: bson_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [bson_ready(v) for v in value]
    return Decimal128(value) if isinstance(value, Decimal) else value


# What a command carries for the session, the cluster and the driver, not for the read itself.
_DRIVER_KEYS = frozenset({"lsid", "$db", "$clusterTime", "$readPreference", "txnNumber", "readConcern"})
_READS = ("find", "aggregate", "getMore")


class Recorder(monitoring.CommandListener):
    """The read commands one database is sent while armed, in rounds: a command started while another was in
    flight joins that one's round (FinGate sends a level's per-type finds together)."""

    def __init__(self) -> None:
        self.db: str | None = None
        self.rounds: list[list[dict[str, Any]]] = []
        self._in_flight = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name != self.db or event.command_name not in _READS:
            return
        command = {k: v for k, v in event.command.items() if k not in _DRIVER_KEYS}
        if self._in_flight == 0 or not self.rounds:
            self.rounds.append([])
        self.rounds[-1].append(command)
        self._in_flight += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._ended(event.database_name, event.command_name)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._ended(event.database_name, event.command_name)

    def _ended(self, db: str, name: str) -> None:
        if db == self.db and name in _READS:
            self._in_flight -= 1


RECORDER = Recorder()
monitoring.register(RECORDER)  # clients made after this import report to it


class RawMongo:
    """Baseline (a): PyMongo with default codecs fetching the documents each query needs, no GraphQL.

    Stored `_id`s are learnt once (`prepare`), so timed reads are `_id` lookups whatever the store's key format.
    """

    def __init__(self, uri: str, db: str) -> None:
        self.client: AsyncMongoClient[Resource] = AsyncMongoClient(uri)
        self.db = self.client[db]
        self.keys: dict[tuple[str, str], Any] = {}

    async def prepare(self, types: tuple[str, ...] = ("PaymentReconciliation", "Claim", "ClaimResponse")) -> None:
        for rtype in types:
            self.keys.update({(rtype, d["id"]): d["_id"] async for d in self.db[rtype].find({}, {"id": 1})})

    async def close(self) -> None:
        await self.client.close()

    async def replay(self, rounds: list[list[dict[str, Any]]]) -> list[Resource]:
        """FinGate's recorded reads, sent as PyMongo's plain `command` with default codecs: the same commands
        (filters, projections, sorts, limits, batch sizes), each round's together, and the documents they return."""

        async def send(command: dict[str, Any]) -> list[Resource]:
            if "getMore" in command:
                raise RuntimeError("FinGate's read needed a getMore: its batch size no longer holds the reply")
            return list((await self.db.command(command))["cursor"]["firstBatch"])

        out: list[Resource] = []
        for commands in rounds:
            for docs in await asyncio.gather(*(send(c) for c in commands)):
                out += docs
        return out

    async def _settled(self, reconciliations: list[Resource]) -> list[Resource]:
        wanted: dict[str, set[Any]] = {"Claim": set(), "ClaimResponse": set()}
        for r in reconciliations:
            for a in r.get("allocation", ()):
                for key in ("target", "response"):
                    if parsed := _parse_reference(a[key]):
                        wanted[parsed[0]].add(self.keys[parsed])
        # The commands FinGate sends for a level: a find by `_id` per type, sent together.
        found = await asyncio.gather(
            *(
                self.db[rtype].find({"_id": {"$in": list(keys)}}, batch_size=len(keys) + 1).to_list()
                for rtype, keys in wanted.items()
            )
        )
        return [d for part in found for d in part]

    async def w1(self, id: str) -> list[Resource]:
        reconciliation = await self.db["PaymentReconciliation"].find_one(
            {"_id": self.keys["PaymentReconciliation", id]}
        )
        assert reconciliation is not None
        return [reconciliation, *await self._settled([reconciliation])]

    async def w2(self, payer: str, count: int) -> list[Resource]:
        query = search.compile_filter("PaymentReconciliation", {"payment-issuer": payer})
        listed = [d async for d in self.db["PaymentReconciliation"].find(query, limit=count)]
        return listed + await self._settled(listed)

    async def w4(self, claim: Resource) -> None:
        """The write the mutation needs: the resource and its first history version, in one transaction."""
        doc = {**claim, "_id": uuid.uuid4().hex, "meta": {"versionId": "1"}}
        async with self.client.start_session() as session, await session.start_transaction():
            await self.db["BenchClaim"].insert_one(doc, session=session)
            await self.db["BenchClaim_history"].insert_one({"_id": f"{doc['_id']}/1", "resource": doc}, session=session)
