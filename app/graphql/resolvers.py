"""The few Python resolvers of the generated schema; each only calls `info.context` (an `app.graphql.context.Context`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any

from app import errors
from app.billing import VIEW_TYPES
from app.fhir.model import SERVED, SERVED_RESOURCES
from app.fhir.references import relative_reference
from app.fhir.values import Resource
from app.graphql.bundles import entries as bundle_entries
from app.graphql.compat import selected_fields
from app.graphql.naming import JSON_NAMES, UNSERVED_RESOURCE
from app.graphql.truncation import note_view_lists

Resolver = Callable[..., Any]
BatchResolver = Callable[[Any, list[Any], list[Any]], Awaitable[list[Any]]]


def search_params(arg_codes: Mapping[str, str], args: Mapping[str, Any]) -> dict[str, Any]:
    """The search arguments actually given, keyed by their R5 code (`payment_issuer` -> `payment-issuer`):
    the one place argument names become codes; below this layer, only codes. Each plain argument is a list of
    values (AND); `_filter` keeps its name and each of `_modifiers` becomes FHIR's `code:modifier` key
    (app.store.filter)."""
    out = {arg_codes[name]: value for name, value in args.items() if value is not None and name in arg_codes}
    if args.get("_filter") is not None:
        out["_filter"] = args["_filter"]
    for m in args.get("_modifiers") or ():
        key = f"{arg_codes.get(m.param, m.param)}:{m.modifier}"
        if key in out:
            raise errors.bad_input(
                f"_modifiers: {key} appears twice; give one entry and OR its values with commas",
                expression="_modifiers",
            )
        out[key] = m.value
    return out


def sort_codes(arg_codes: Mapping[str, str], sort: str | None) -> str | None:
    """`_sort` with any argument name written as its code (`-payment_issuer` -> `-payment-issuer`)."""
    if not sort:
        return sort
    items = (item.strip() for item in sort.split(","))
    return ",".join(f"-{arg_codes.get(i[1:], i[1:])}" if i.startswith("-") else arg_codes.get(i, i) for i in items)


def read(resource_type: str) -> Resolver:
    async def resolve(root: None, info: Any, id: str) -> Resource:
        found = await info.context.read(resource_type, id)
        if found is None:
            raise await info.context.not_found(resource_type, id)
        return found

    return resolve


def search(resource_type: str, arg_codes: Mapping[str, str]) -> Resolver:
    async def resolve(root: None, info: Any, **args: Any) -> list[Resource]:
        params = search_params(arg_codes, args)
        return await info.context.search(
            resource_type,
            params,
            args.get("_count"),
            args.get("_offset"),
            sort_codes(arg_codes, args.get("_sort")),
            path=info.path,
        )

    return resolve


def connection(resource_type: str, arg_codes: Mapping[str, str]) -> Resolver:
    async def resolve(root: None, info: Any, **args: Any) -> dict[str, Any]:
        params = search_params(arg_codes, args)
        return await info.context.connection(
            resource_type, params, args.get("_count"), args.get("_cursor"), sort_codes(arg_codes, args.get("_sort"))
        )

    return resolve


def history(resource_type: str) -> Resolver:
    async def resolve(root: None, info: Any, id: str) -> list[Resource]:
        return await info.context.history(resource_type, id)

    return resolve


def reverse(resource_type: str, arg_codes: Mapping[str, str]) -> Resolver:
    """`<resource_type>List(_reference: ...)` on any resource: one resolver shared by every parent type."""

    async def resolve(root: Resource, info: Any, **args: Any) -> list[Resource]:
        target = f"{root['resourceType']}/{root['id']}"
        params = search_params(arg_codes, args)
        return await info.context.reverse(
            resource_type,
            args["_reference"].value,
            target,
            params,
            args.get("_count"),
            args.get("_offset"),
            sort_codes(arg_codes, args.get("_sort")),
            path=info.path,
        )

    return resolve


def reverse_connection(resource_type: str, arg_codes: Mapping[str, str]) -> Resolver:
    """`<resource_type>Connection(_reference: ...)` on any resource: one resolver shared by every parent type."""

    async def resolve(root: Resource, info: Any, **args: Any) -> dict[str, Any]:
        return await info.context.reverse_connection(  # type: ignore[no-any-return]
            resource_type,
            args["_reference"].value,
            f"{root['resourceType']}/{root['id']}",
            args.get("_count"),
            args.get("_cursor"),
            sort_codes(arg_codes, args.get("_sort")),
        )

    return resolve


def _served(found: Resource | None) -> Resource | None:
    return found if found is not None and found.get("resourceType") in SERVED else None


def reference_resource() -> Resolver:
    """`Reference.resource`: the target when it is a served resource, else null; `type`: only a target of that type
    (another is null, unread); `optional: false`: a target that cannot be resolved is NOT_FOUND, not null."""

    async def resolve(root: Resource, info: Any, type: Any = None, optional: bool | None = None) -> Resource | None:
        wanted = None if type is None else type.value
        text = root.get("reference")
        named = relative_reference(text) if isinstance(text, str) else None
        if wanted is not None and named is not None and named[0] != wanted:
            return None
        found = _served(await info.context.resolve(root))
        if found is None and optional is False:
            raise errors.FinGateError(
                errors.NOT_FOUND,
                f"the reference {text or root.get('display') or '(without a reference)'} cannot be resolved here "
                "(missing, external or of a type FinGate does not serve): leave out `optional: false` for null",
                issues=[errors.outcome_issue("reference not resolved", "Reference.reference", code="not-found")],
            )
        if found is not None and wanted is not None and found.get("resourceType") != wanted:
            return None
        return found

    return resolve


async def reference_resources(context: Any, roots: list[Resource], infos: list[Any]) -> list[Resource | None]:
    """`Reference.resource` of every root of a level at once (`Context.resolve_many`: one store read)."""
    return [_served(found) for found in await context.resolve_many(roots)]


def billing_view() -> Resolver:
    """`billing` on Claim, Invoice and PaymentReconciliation: FinGate's computed view (app.billing)."""

    async def resolve(root: Resource, info: Any) -> dict[str, Any]:
        view: dict[str, Any] = await info.context.billing(root)
        note_view_lists(info.context, info.path, info.selected_fields, view)
        return view

    return resolve


def party_view() -> Resolver:
    """`billing(asOf)` on Patient and Organization: outstanding totals and their aging (app.billing)."""

    async def resolve(root: Resource, info: Any, asOf: str | None = None) -> dict[str, Any]:  # noqa: N803 - GraphQL name
        if asOf is None:
            day = datetime.now(UTC).date()
        else:
            try:
                day = date.fromisoformat(asOf)
            except ValueError:
                raise errors.bad_input(f"asOf must be a date, YYYY-MM-DD; got {asOf!r}", expression="asOf") from None
        view: dict[str, Any] = await info.context.party_billing(root, day)
        note_view_lists(info.context, info.path, info.selected_fields, view)
        return view

    return resolve


async def billing_views(context: Any, roots: list[Resource], infos: list[Any]) -> list[dict[str, Any]]:
    """`billing` of every root of a level at once (`Context.billing_many`: one store command)."""
    views: list[dict[str, Any]] = await context.billing_many(roots)
    for view, info in zip(views, infos, strict=True):
        note_view_lists(context, info.path, selected_fields(info), view)
    return views


BATCH_FORMS: Mapping[tuple[str, str], BatchResolver] = MappingProxyType(
    {
        ("Reference", "resource"): reference_resources,
        **{(t, "billing"): billing_views for t in VIEW_TYPES},
    }
)
"""Fields (type, name) whose resolver has a batch form `(context, roots, infos) -> results`: the compiled engine,
given this table by `create_app`, calls it once per level with every root of the level (and each one's resolve
info: its path and field nodes), where the resolver itself would run once per root."""


def resolve_data_field(root: Any, python: str) -> Any:
    """Every plain data field (`StrawberryConfig.default_resolver`): a lookup in the stored FHIR JSON."""
    return root.get(JSON_NAMES.get(python, python))


def resolve_contained_type(root: Any, info: Any, _union: Any) -> str:
    """The member of the `ContainedResource` union a dict stands for."""
    resource_type = root.get("resourceType")
    return resource_type if resource_type in SERVED else UNSERVED_RESOURCE


def resolve_resource_type(root: Any, info: Any, _union: Any) -> str:
    """The member of the `Resource` union a dict stands for: its `resourceType`."""
    resource_type = root.get("resourceType")
    if resource_type not in SERVED:
        raise errors.FinGateError(
            errors.INTERNAL,
            f"{info.parent_type.name}.{info.field_name} holds a {resource_type} (id {root.get('id')!r}), "
            f"which FinGate does not serve; the Resource union has {', '.join(SERVED_RESOURCES)}",
        )
    return resource_type


def as_resource(resource_type: str, res: dict[str, Any]) -> dict[str, Any]:
    """The mutation input as a FHIR resource of `resource_type` (resourceType first, as FHIR JSON writes it)."""
    given = res.get("resourceType", resource_type)
    if given != resource_type:
        raise errors.bad_input(
            f"res.resourceType is {given!r} but this mutation takes a {resource_type}: "
            f"set resourceType to {resource_type!r} or leave it out",
            expression="resourceType",
        )
    return {"resourceType": resource_type, **res}


def create(resource_type: str) -> Resolver:
    async def resolve(root: None, info: Any, res: dict[str, Any], ifNoneExist: str | None = None) -> Resource:  # noqa: N803
        resource = as_resource(resource_type, res)
        if ifNoneExist is None:
            return await info.context.create(resource_type, resource)
        return await info.context.create(resource_type, resource, ifNoneExist)

    return resolve


def patch(resource_type: str) -> Resolver:
    async def resolve(root: None, info: Any, id: str, patch: Any, ifMatch: str | None = None) -> Resource:  # noqa: N803
        return await info.context.patch(resource_type, id, patch, ifMatch)

    return resolve


def bundle(kind: str) -> Resolver:
    """`transaction(entries)` or `batch(entries)`: each entry's outcome (app.bundles)."""

    async def resolve(root: None, info: Any, entries: list[Any]) -> list[dict[str, Any]]:
        return await info.context.bundle(kind, bundle_entries(entries))  # type: ignore[no-any-return]

    return resolve


def update(resource_type: str) -> Resolver:
    async def resolve(root: None, info: Any, id: str, res: dict[str, Any], ifMatch: str | None = None) -> Resource:
        return await info.context.update(resource_type, id, as_resource(resource_type, res), ifMatch)

    return resolve


def delete(resource_type: str) -> Resolver:
    async def resolve(root: None, info: Any, id: str) -> Resource:
        return await info.context.delete(resource_type, id)

    return resolve


def audit_log() -> Resolver:
    """`AuditLog`: the caller's tenant's write records (an admin scope; see app.graphql.context)."""

    async def resolve(
        root: None, info: Any, _count: int | None = None, type: str | None = None, id: str | None = None
    ) -> list[dict[str, Any]]:
        return await info.context.audit_log(_count, type, id, path=info.path)  # type: ignore[no-any-return]

    return resolve


def fhir_json(value: Any) -> Any:
    """A coerced GraphQL input value as FHIR JSON: null members dropped, recursively.

    List items stay as given: FHIR JSON aligns `given` with `_given` by position, so a
    null item there is data.
    """
    if isinstance(value, dict):
        return {name: fhir_json(item) for name, item in value.items() if item is not None}
    if isinstance(value, list):
        return [fhir_json(item) for item in value]
    return value


def from_input(_cls: type, value: Mapping[str, Any], _context: Any) -> dict[str, Any]:
    """Strawberry's `from_input` hook for every generated input type.

    graphql-core has already coerced the value (scalars parsed, keys are the GraphQL
    field names, which are the FHIR JSON names), so no input object is built: the
    mutation gets the FHIR JSON dict directly.
    """
    return fhir_json(dict(value))
