"""Generates FinGate's GraphQL schema (Strawberry classes) from the FHIR R5 spec model, deterministically."""

from __future__ import annotations

import enum
import inspect
from collections.abc import AsyncGenerator, Callable, Iterable
from functools import cache
from typing import Annotated, Any

import strawberry
from strawberry.annotation import StrawberryAnnotation
from strawberry.extensions import ParserCache
from strawberry.schema.config import StrawberryConfig
from strawberry.types.base import StrawberryList, StrawberryOptional
from strawberry.types.field import StrawberryField
from strawberry.types.fields.resolver import StrawberryResolver
from strawberry.types.unset import UNSET

from app.fhir.model import SERVED_RESOURCES, SearchParam, Spec, TypeDef, spec
from app.graphql import billing, bundles, documents, lists, payers, payments, resolvers, subscriptions
from app.graphql.compat import (
    FixedTypeField,
    QuietSchema,
    ResolvedUnion,
    add_to_schema,
    convert_input_with,
    graphql_schema,
)
from app.graphql.directives import DIRECTIVES, Reshape
from app.graphql.fields import (
    ORIGIN,
    FieldSpec,
    arg_codes,
    element_fields,
    element_type_def,
    reference_params,
    search_args,
    search_description,
    type_description,
)
from app.graphql.limits import QueryLimits, TokenLimit
from app.graphql.naming import (
    CONTAINED_UNION,
    UNSERVED_RESOURCE,
    check_unique,
    connection_names,
    input_name,
    object_type_names,
    python_name,
    reference_enum_name,
)
from app.graphql.projection import Projection
from app.graphql.scalars import JSON, FhirDecimal, scalar_map
from app.graphql.truncation import Truncation
from app.graphql.typed import TypedResource

SDL_HEADER = (
    f"# FinGate GraphQL schema, generated from the HL7 {ORIGIN} StructureDefinitions and search parameters\n"
    "# by app/graphql/build.py. Do not edit: run `make sdl`.\n\n"
)

_PYTHON_SCALARS: dict[str, object] = {
    "Boolean": bool,
    "Int": int,
    "Decimal": FhirDecimal,
    "ID": strawberry.ID,
    "String": str,
}

Field = tuple[str, object, StrawberryField]  # Python attribute, annotation (None: from the resolver), field
ArgSpec = tuple[str, object, bool, str | None]  # name, Python type, required, description

AUDIT_RECORD = "AuditRecord"
RESOURCE_TYPE = "ResourceType"
SUBSCRIPTION_ROOT = "SubscriptionRoot"  # FHIR's own `Subscription` resource type takes the usual name
_COUNT: ArgSpec = (
    "_count",
    int,
    False,
    "At most this many resources (20); a list stopping before all matches says so in `extensions.truncated`, "
    "and 0 returns none but how many match there.",
)
_PAGE_COUNT: ArgSpec = ("_count", int, False, "At most this many resources a page (20); `count` is how many match.")
_SORT: ArgSpec = ("_sort", str, False, "Sort order: comma-separated search parameter codes, `-` for descending.")


@strawberry.input(name="SearchModifier", description="One FHIR search modifier: `param:modifier=value`.")
class SearchModifier:
    param: str = strawberry.field(description="The search parameter (argument name or code).")
    modifier: str = strawberry.field(description="missing, not, exact, contains, identifier or text.")
    value: str = strawberry.field(description="As the plain argument's (commas OR); `true` or `false` for missing.")


_FILTER: ArgSpec = ("_filter", str, False, "A FHIR _filter expression, ANDed with the other arguments.")
_MODIFIERS: ArgSpec = ("_modifiers", list[SearchModifier], False, "Search modifiers, ANDed with the other arguments.")


def data_field(fixed_type: object, python: str, name: str, description: str | None) -> FixedTypeField:
    """A plain data field: its type is known when it is created."""
    field = FixedTypeField(python_name=python, graphql_name=name, description=description)
    field.fixed_type = fixed_type
    return field


class _Builder:
    """Creates every class empty first (types refer to each other in cycles), then defines them."""

    def __init__(self, model: Spec) -> None:
        self.model = model
        self.type_defs = sorted([*model.types.values(), element_type_def(model)], key=lambda td: td.name)
        self.names = object_type_names(self.type_defs)
        self.renamed = {fhir: gql for fhir, gql in self.names.items() if fhir != gql}
        self.served = sorted(SERVED_RESOURCES)
        self.outputs = {name: _empty(gql) for name, gql in self.names.items()}
        self.inputs = {name: _empty(input_name(gql)) for name, gql in self.names.items()}
        self.shapes: dict[tuple[object, bool, bool], object] = {}
        members = tuple(StrawberryAnnotation(self.outputs[name]) for name in self.served)
        self.resource_union = ResolvedUnion(
            resolvers.resolve_resource_type,
            name="Resource",
            type_annotations=members,
            description=f"Any {ORIGIN} resource FinGate serves, told apart by `resourceType`.",
        )
        self.contained_union = ResolvedUnion(
            resolvers.resolve_contained_type,
            name=CONTAINED_UNION,
            type_annotations=(*members, StrawberryAnnotation(self._unserved_resource())),
            description=(
                f"A contained resource: any {ORIGIN} resource FinGate serves, or {UNSERVED_RESOURCE} "
                "for the other types (FHIR allows any type in `contained`)."
            ),
        )
        self.resource_type = self._resource_type_enum()
        self.reverse_types = [name for name in self.served if reference_params(model, name)]
        self.enums = {name: self._reference_enum(name) for name in self.reverse_types}
        self.connections = {name: self._connection(name) for name in self.served}
        self.reverse_resolvers = {name: self._reverse_resolver(name) for name in self.reverse_types}
        self.reverse_connections = {name: self._reverse_connection(name) for name in self.reverse_types}
        self.billing = billing.billing_types(self.outputs["Reference"])
        self.bundle_outcomes = bundles.outcomes_type(self.resource_union)
        self.changes = {name: subscriptions.change_type(name, self.outputs[name]) for name in self.served}

    def schema(self) -> strawberry.Schema:
        self._check_names()
        for td in self.type_defs:
            self._define_output(td)
            self._define_input(td)
        query = _empty("Query")
        fields = (f for t in self.served for f in self._query_fields(t, self.connections[t]))
        hooks = [
            ("ChangesPosition", None, subscriptions.position_field()),
            ("SubscriptionStatus", None, subscriptions.status_field()),
            ("SubscriptionDeliveries", None, subscriptions.attempts_field()),
            ("SubscriptionSecret", None, subscriptions.secret_field()),
        ]
        _define(query, [*fields, self._audit_field(), self._payment_events_field(), payers.query_field(), *hooks])
        mutation = _empty("Mutation")
        _define(
            mutation,
            [
                *(f for t in self.served for f in self._mutation_fields(t)),
                *self._bundle_fields(),
                payers.mutation_field(),
            ],
        )
        subscription = _empty(SUBSCRIPTION_ROOT)
        _define(subscription, self._subscription_fields())
        built = QuietSchema(
            query=strawberry.type(query, name="Query", description=f"Read and search {ORIGIN} financial resources."),
            mutation=strawberry.type(mutation, name="Mutation", description=f"Write {ORIGIN} financial resources."),
            subscription=strawberry.type(
                subscription,
                name=SUBSCRIPTION_ROOT,
                description="Writes as they commit, in order, resumable (graphql-transport-ws over WebSocket /graphql).",
            ),
            config=StrawberryConfig(
                auto_camel_case=False,
                default_resolver=resolvers.resolve_data_field,
                scalar_map=scalar_map(),
            ),
            # Classes: Strawberry makes one per request, and their caches are module-wide.
            # TokenLimit before the parser; QueryLimits validates (cached per query text), then checks limits;
            # Truncation reports the lists the Context noted as cut; Reshape applies FHIR GraphQL's directives.
            # TypedResource rewrites `resource(type: T) { f }` once parsed. Projection tells the Context what the
            # operation selects (before the compiled path, appended last, runs).
            extensions=[TokenLimit, ParserCache, TypedResource, QueryLimits, Truncation, Reshape, Projection],
        )
        gql = graphql_schema(built)
        lists.add_list_arguments(gql.get_type(self.names[td.name]) for td in self.type_defs)  # type: ignore[misc]
        add_to_schema(built, DIRECTIVES, [lists.FILTER_VALUE])
        return built

    # --- object and input types ------------------------------------------------------------

    def _shape(self, item: Any, is_list: bool, nullable_items: bool) -> object:
        """The Strawberry type of a data field, built once per shape and shared by all fields.

        Giving Strawberry resolved types instead of `list[X] | None` spares it re-deriving
        each annotation, the bulk of the build time.
        """
        key = (item, is_list, nullable_items)
        if key not in self.shapes:
            inner = StrawberryOptional(item) if nullable_items else item
            self.shapes[key] = StrawberryOptional(StrawberryList(inner) if is_list else item)
        return self.shapes[key]

    def _data_fields(self, td: TypeDef, classes: dict[str, type], resource: object) -> list[Field]:
        fields: list[Field] = []
        for f in element_fields(td, self.renamed):
            shape = self._shape(self._item(f, classes, resource), f.is_list, f.nullable_items)
            fields.append((f.python, shape, data_field(shape, f.python, f.name, f.description)))
        return fields

    @staticmethod
    def _item(f: FieldSpec, classes: dict[str, type], resource: object) -> object:
        if f.target == "Resource":
            return resource
        return _PYTHON_SCALARS.get(f.target) or classes[f.target]

    def _define_output(self, td: TypeDef) -> None:
        fields = self._data_fields(td, self.outputs, self.contained_union)
        if td.name == "Reference":
            fields.append(self._reference_resource_field())
        if td.kind == "resource":
            fields.extend(self._reverse_fields())
        if td.name in self.billing:
            view = StrawberryOptional(self.billing[td.name])
            party = td.name in billing.PARTY_TYPES
            resolver = resolvers.party_view() if party else resolvers.billing_view()
            args: list[ArgSpec] = [("asOf", str, False, billing.AS_OF)] if party else []
            fields.append(billing.billing_field(td.name, _with_signature(resolver, args, view)))
        if td.kind == "resource":
            fields.extend(documents.document_fields(td.name))
        name = self.names[td.name]
        cls = self.outputs[td.name]
        _define(cls, fields)
        strawberry.type(cls, name=name, description=type_description(td, name))

    def _define_input(self, td: TypeDef) -> None:
        name = self.names[td.name]
        cls = self.inputs[td.name]
        # `contained` on input: raw resources, as a union cannot be an input type.
        _define(cls, self._data_fields(td, self.inputs, JSON))
        description = f"{name} as input: FHIR JSON, with the fields of the {name} type."
        strawberry.input(cls, name=input_name(name), description=description)
        convert_input_with(cls, resolvers.from_input)

    def _unserved_resource(self) -> type:
        cls = _empty(UNSERVED_RESOURCE)
        _define(
            cls,
            [
                ("resourceType", str | None, strawberry.field(name="resourceType", description="Its FHIR type.")),
                ("id", strawberry.ID | None, strawberry.field(name="id", description="Its id inside the container.")),
            ],
        )
        description = (
            "A contained resource of a type FinGate does not serve (a Device in a Claim): only its type and id."
        )
        return strawberry.type(cls, name=UNSERVED_RESOURCE, description=description)

    def _reference_resource_field(self) -> Field:
        description = (
            "The referenced resource when FinGate serves it (`Type/id`, or a contained `#id`); null otherwise."
        )
        args: list[ArgSpec] = [
            ("type", self.resource_type, False, "Only a resource of this type: null when the reference is to another."),
            (
                "optional",
                bool,
                False,
                "`false`: a reference that cannot be resolved is a NOT_FOUND error; given `true` or left out, null.",
            ),
        ]
        resolver = _with_signature(resolvers.reference_resource(), args, StrawberryOptional(self.resource_union))
        return "resource", None, strawberry.field(resolver=resolver, name="resource", description=description)

    def _resource_type_enum(self) -> type[enum.Enum]:
        members = {name: strawberry.enum_value(name) for name in self.served}
        values: Any = enum.Enum(RESOURCE_TYPE, members)  # type: ignore[misc]
        description = "A resource type FinGate serves: `Reference.resource(type:)`."
        return strawberry.enum(values, name=RESOURCE_TYPE, description=description)  # type: ignore[no-any-return]

    # --- reverse references ----------------------------------------------------------------

    def _reference_enum(self, resource_type: str) -> type[enum.Enum]:
        name = reference_enum_name(resource_type)
        params = reference_params(self.model, resource_type)
        members = {p.arg_name: strawberry.enum_value(p.code, description=p.description) for p in params}
        description = f"The reference search parameters of {resource_type}: which reference points back."
        values: Any = enum.Enum(name, members)  # type: ignore[misc]
        return strawberry.enum(values, name=name, description=description)  # type: ignore[no-any-return]

    def _reverse_resolver(self, x: str) -> StrawberryResolver:
        """One resolver per listed type, shared by every resource type: Strawberry reads its arguments once."""
        params = search_args(self.model, x)
        # Undescribed: Query.<X>List describes them once, where 23 copies would double the SDL.
        args: list[ArgSpec] = [
            ("_reference", self.enums[x], True, None),
            *((p.arg_name, list[str], False, None) for p in params),
            ("_count", int, False, None),
            ("_offset", int, False, None),
            ("_sort", str, False, None),
        ]
        resolver = resolvers.reverse(x, arg_codes(params))
        return StrawberryResolver(_with_signature(resolver, args, StrawberryOptional(StrawberryList(self.outputs[x]))))

    def _reverse_connection(self, x: str) -> StrawberryResolver:
        """`XConnection(_reference:)`: Query.XConnection with the reference parameter set to this resource.
        No other search arguments: the SDL prints a field's arguments on every type that has it."""
        args: list[ArgSpec] = [
            ("_reference", self.enums[x], True, None),
            ("_count", int, False, None),
            ("_cursor", str, False, None),
            ("_sort", str, False, None),
        ]
        resolver = resolvers.reverse_connection(x, arg_codes(search_args(self.model, x)))
        return StrawberryResolver(_with_signature(resolver, args, StrawberryOptional(self.connections[x])))

    def _reverse_fields(self) -> list[Field]:
        lists = [
            (
                f"{x}List",
                None,
                strawberry.field(
                    resolver=resolver,
                    name=f"{x}List",
                    description=(
                        f"The {x} resources whose reference search parameter `_reference` points at this resource; "
                        f"the other arguments are those of Query.{x}List."
                    ),
                ),
            )
            for x, resolver in self.reverse_resolvers.items()
        ]
        connections = [
            (
                f"{x}Connection",
                None,
                strawberry.field(
                    resolver=resolver,
                    name=f"{x}Connection",
                    description=f"Query.{x}Connection of those whose `_reference` points here.",
                ),
            )
            for x, resolver in self.reverse_connections.items()
        ]
        return [*lists, *connections]

    # --- root types ------------------------------------------------------------------------

    def _connection(self, t: str) -> type:
        """FHIR GraphQL's Connection: the page, where it is in the results, cursors to its neighbours."""
        page_name, edge_name = connection_names(t)
        edge = _empty(edge_name)
        _define(edge, [*_plain(_EDGE_FIELDS), ("resource", self.outputs[t], strawberry.field(name="resource"))])
        strawberry.type(edge, name=edge_name, description=f"One {t} of a page.")
        page = _empty(page_name)
        edges = (
            "edges",
            StrawberryList(edge),
            strawberry.field(name="edges", description="The resources of this page."),
        )
        _define(page, [*_plain(_CONNECTION_FIELDS), edges])
        return strawberry.type(page, name=page_name, description=f"A page of {t} search results.")

    def _query_fields(self, t: str, connection: type) -> list[Field]:
        out = self.outputs[t]
        params = search_args(self.model, t)
        codes = arg_codes(params)
        search = _search_arg_specs(params)
        id_arg: ArgSpec = ("id", strawberry.ID, True, f"The {t} id.")
        offset: ArgSpec = ("_offset", int, False, "Skip this many matches.")
        cursor: ArgSpec = (
            "_cursor",
            str,
            False,
            "The page to return: a `first`, `previous`, `next` or `last` cursor, alone (it carries its search).",
        )
        return [
            _root_field(
                t,
                resolvers.read(t),
                [id_arg],
                StrawberryOptional(out),
                f"Read one {t} by id (NOT_FOUND error when missing or deleted).",
            ),
            _root_field(
                f"{t}List",
                resolvers.search(t, codes),
                [*search, _FILTER, _MODIFIERS, _COUNT, offset, _SORT],
                StrawberryOptional(StrawberryList(out)),
                f"Search {t} resources.",
            ),
            _root_field(
                f"{t}Connection",
                resolvers.connection(t, codes),
                [*search, _FILTER, _MODIFIERS, _PAGE_COUNT, cursor, _SORT],
                StrawberryOptional(connection),
                f"Search {t} resources a page at a time.",
            ),
            _root_field(
                f"{t}History",
                resolvers.history(t),
                [id_arg],
                StrawberryOptional(StrawberryList(out)),
                f"Every version of one {t}, newest first. A deleted {t}'s starts with its deletion: an entry with only"
                " `id` and `meta` (`lastUpdated`: when; `tag`: http://hl7.org/fhir/http-verb|DELETE; no `versionId`).",
            ),
        ]

    def _mutation_fields(self, t: str) -> list[Field]:
        out = StrawberryOptional(self.outputs[t])
        res: ArgSpec = ("res", self.inputs[t], True, f"The {t} as FHIR JSON (`resourceType` may be left out).")
        id_arg: ArgSpec = ("id", strawberry.ID, True, f"The {t} id.")
        if_match: ArgSpec = ("ifMatch", str, False, "The expected meta.versionId: a CONFLICT error when it differs.")
        if_none_exist: ArgSpec = (
            "ifNoneExist",
            str,
            False,
            f"FHIR conditional create: a {t} search string (`identifier=http://example.org|123`); one match is "
            "returned unchanged instead of creating, several are PRECONDITION_FAILED.",
        )
        patch: ArgSpec = (
            "patch",
            JSON,
            True,
            "A JSON Patch (RFC 6902): a list of operations; id and meta are the server's.",
        )
        return [
            _root_field(f"{t}Create", resolvers.create(t), [res, if_none_exist], out, f"Create one {t}."),
            _root_field(
                f"{t}Patch",
                resolvers.patch(t),
                [id_arg, patch, if_match],
                out,
                f"Apply a JSON Patch to one {t}, then write it as `{t}Update` would.",
            ),
            _root_field(
                f"{t}Update",
                resolvers.update(t),
                [id_arg, res, if_match],
                out,
                f"Replace one {t} with a new version; the current version, unchanged, when `res` says nothing new.",
            ),
            _root_field(f"{t}Delete", resolvers.delete(t), [id_arg], out, f"Delete one draft {t}."),
        ]

    def _bundle_fields(self) -> list[Field]:
        entries: ArgSpec = ("entries", list[bundles.BundleEntryInput], True, "Bundle.entry: the entries, in order.")
        return [
            _root_field(
                "transaction",
                resolvers.bundle("transaction"),
                [entries],
                self.bundle_outcomes,
                "A FHIR transaction: every entry or none, in one database transaction (deletes, creates, then updates"
                " and patches); `urn:uuid:` references between entries are rewritten; the cross-resource rules see the"
                " state after every entry. The first failing entry is the error (`extensions.entry`).",
            ),
            _root_field(
                "batch",
                resolvers.bundle("batch"),
                [entries],
                self.bundle_outcomes,
                "A FHIR batch: each entry on its own, in order; a failing entry's outcome carries its error.",
            ),
        ]

    def _subscription_fields(self) -> list[Field]:
        """A change feed per served type (`ClaimChanges`, the List's search arguments), and two named ones."""
        fields = []
        for t in self.served:
            params = search_args(self.model, t)
            codes = arg_codes(params)
            returns = AsyncGenerator[self.changes[t], None]  # type: ignore[name-defined]
            fields.append(
                _subscription_field(
                    f"{t}Changes",
                    subscriptions.feed(t, codes, subscriptions.everything),
                    [
                        *((p.arg_name, list[str], False, f"As in {t}List.") for p in params),
                        _FILTER,
                        _MODIFIERS,
                        subscriptions.AFTER,
                    ],
                    returns,
                    f"Every write of a {t} (matching the search, when given), as it commits.",
                )
            )
        claim_change, payment_change = self.changes["Claim"], self.changes["PaymentReconciliation"]
        claim: ArgSpec = ("id", strawberry.ID, False, "Only this Claim.")
        status: ArgSpec = ("status", str, False, "Only writes that leave the Claim in this status.")
        fields.append(
            _subscription_field(
                "ClaimChanged",
                subscriptions.feed("Claim", {}, subscriptions.claim_changed),
                [claim, status, subscriptions.AFTER],
                AsyncGenerator[claim_change, None],  # type: ignore[valid-type]
                "Writes of Claims: one Claim's (`id`), or those that leave a Claim in `status`.",
            )
        )
        payment = "PaymentReconciliation"
        params = [p for p in search_args(self.model, payment) if p.arg_name == "payment_issuer"]
        fields.append(
            _subscription_field(
                f"{payment}Created",
                subscriptions.feed(payment, arg_codes(params), subscriptions.created),
                [*_search_arg_specs(params), subscriptions.AFTER],
                AsyncGenerator[payment_change, None],  # type: ignore[valid-type]
                "New PaymentReconciliations (of one `payment_issuer`, when given), as they commit.",
            )
        )
        return fields

    def _audit_field(self) -> Field:
        record = _empty(AUDIT_RECORD)
        text = StrawberryOptional(str)
        _define(
            record,
            [
                (name, text, strawberry.field(name=name, description=description))
                for name, description in (
                    ("sub", "Who wrote: the token's `sub`."),
                    ("tenant", "The tenant written to."),
                    ("when", "When, a FHIR instant (UTC)."),
                    ("operation", "`create`, `update` or `delete`."),
                    ("type", "The resource type."),
                    ("id", "The resource id."),
                    ("version", "The `meta.versionId` written (for a delete: the version removed)."),
                    ("requestId", "The request id this server gave the write (the response's X-Request-ID)."),
                    ("clientRequestId", "The X-Request-ID the client sent, if any (kept, never used as the id)."),
                )
            ],
        )
        record_type = strawberry.type(record, name=AUDIT_RECORD, description="One write, as the audit log keeps it.")
        returns = StrawberryOptional(StrawberryList(record_type))
        args: list[ArgSpec] = [
            _COUNT,
            ("type", str, False, "Only writes to this resource type."),
            ("id", strawberry.ID, False, "Only writes to this id."),
        ]
        description = "The tenant's writes, newest first. Needs a `system/AuditEvent.r` (or `.read`) scope."
        return _root_field("AuditLog", resolvers.audit_log(), args, returns, description)

    def _payment_events_field(self) -> Field:
        returns = StrawberryOptional(StrawberryList(payments.event_type(self.outputs["Reference"])))
        return _root_field(payments.FIELD, payments.resolver(), payments.ARGS, returns, payments.DESCRIPTION)

    def _check_names(self) -> None:
        check_unique(
            [
                *((gql, f"type {fhir}") for fhir, gql in self.names.items()),
                *((input_name(gql), f"input of {fhir}") for fhir, gql in self.names.items()),
                *((reference_enum_name(n), f"reverse-reference enum of {n}") for n in self.reverse_types),
                *((c, f"connection of {n}") for n in self.served for c in connection_names(n)),
                ("Resource", "union of the served resources"),
                (CONTAINED_UNION, "union of contained resources"),
                (UNSERVED_RESOURCE, "type of unserved contained resources"),
                ("Query", "query root"),
                ("Mutation", "mutation root"),
                (SUBSCRIPTION_ROOT, "subscription root"),
                *((f"{n}Change", f"change event of {n}") for n in self.served),
                (AUDIT_RECORD, "audit log record"),
                (RESOURCE_TYPE, "enum of the served resource types"),
                (lists.FILTER_VALUE.name, "scalar of list arguments"),
                *((name, "bundle type") for name in bundles.NAMES),
                ("RestHookStatus", "rest-hook status"),
                ("RestHookAttempt", "rest-hook attempt"),
                *((name, "billing view type") for name in billing.NAMES),
                *((name, "payment event type") for name in payments.NAMES),
                *((name, "payer import type") for name in payers.NAMES),
                *((s, "scalar") for s in ("Decimal", "JSON", "String", "Int", "Float", "Boolean", "ID")),
            ]
        )


_CONNECTION_FIELDS: list[tuple[str, object, str]] = [
    ("count", int | None, "Total number of matches."),
    ("offset", int | None, "How many matches come before this page."),
    ("pagesize", int | None, "The page size asked for (`_count`)."),
    ("first", str | None, "Cursor of the first page."),
    ("previous", str | None, "Cursor of the previous page; null on the first."),
    ("next", str | None, "Cursor of the next page; null on the last."),
    ("last", str | None, "Cursor of the last page."),
]
_EDGE_FIELDS: list[tuple[str, object, str]] = [
    ("mode", str | None, "`match`: a search match."),
    ("score", FhirDecimal | None, "Search relevance; null (no scoring)."),
]


def _plain(fields: list[tuple[str, object, str]]) -> list[Field]:
    return [(name, kind, strawberry.field(name=name, description=text)) for name, kind, text in fields]


def _empty(name: str) -> type:
    return type(name, (), {"__module__": __name__})


def _define(cls: type, fields: Iterable[Field]) -> None:
    """Give an empty class its annotations and `strawberry.field`s, ready for `strawberry.type`."""
    fields = list(fields)
    check_unique(((python, f"{cls.__name__} field") for python, _, _ in fields), kind="field names")
    cls.__annotations__ = {python: annotation for python, annotation, _ in fields if annotation is not None}
    for python, _, field in fields:
        setattr(cls, python, field)


def _search_arg_specs(params: list[SearchParam]) -> list[ArgSpec]:
    # `[String!]`: a list ANDs its values; a single value is coerced to a one-item list, so `status: "active"` stays valid.
    return [(p.arg_name, list[str], False, search_description(p)) for p in params]


def _with_signature(fn: Callable[..., Any], args: list[ArgSpec], returns: object) -> Callable[..., Any]:
    """Give a generic `(root, info, **args)` resolver the arguments Strawberry reads from a signature."""
    param = inspect.Parameter
    parameters = [
        param("root", param.POSITIONAL_OR_KEYWORD),
        param("info", param.POSITIONAL_OR_KEYWORD, annotation=strawberry.Info),
    ]
    for name, python_type, required, description in args:
        kind: Any = python_type if required else python_type | None  # type: ignore[operator]
        # A keyword (Encounter's `class` parameter) is `class_` in Python, `class` in GraphQL.
        renamed = name if python_name(name) != name else None
        annotation = Annotated[kind, strawberry.argument(name=renamed, description=description)]  # type: ignore[valid-type]
        parameters.append(
            param(
                python_name(name), param.KEYWORD_ONLY, annotation=annotation, default=param.empty if required else UNSET
            )
        )
    fn.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    return fn


def _root_field(name: str, fn: Callable[..., Any], args: list[ArgSpec], returns: object, description: str) -> Field:
    return name, None, strawberry.field(resolver=_with_signature(fn, args, returns), name=name, description=description)


def _subscription_field(
    name: str, fn: Callable[..., Any], args: list[ArgSpec], returns: object, description: str
) -> Field:
    resolver = _with_signature(fn, args, returns)
    return name, None, strawberry.subscription(resolver=resolver, name=name, description=description)


def build_schema() -> strawberry.Schema:
    """The whole FinGate GraphQL schema, generated from `spec()` (about 1.5 s: build it once)."""
    return _Builder(spec()).schema()


@cache
def schema() -> strawberry.Schema:
    """The one schema of this process."""
    return build_schema()


def print_sdl(built: strawberry.Schema | None = None) -> str:
    """The schema as SDL: byte-for-byte stable, headed by where it came from, ending in a newline."""
    return SDL_HEADER + (built or schema()).as_str() + "\n"
