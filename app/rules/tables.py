"""The status lifecycles and cross-resource rules of the served resources, as data (README "Status lifecycle")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

# A status of `None` stands for "no status element": the element is 0..1 for Contract, and its R5
# examples carry none, so a Contract may be created and edited without one.
Status = str | None


@dataclass(frozen=True)
class Lifecycle:
    """One status value set's life-cycle: what a resource may be created as, move to, edit and delete."""

    value_set: str
    codes: tuple[str, ...]  # the value set, in the order the rules read best
    initial: frozenset[Status]  # statuses a resource may be created with
    transitions: Mapping[Status, frozenset[str]]  # from -> the statuses it may move to
    editable: frozenset[Status]  # content (beyond the status elements) may change while in these
    deletable: frozenset[Status]  # "financial records are never erased": only draft-like ones
    amend_into: frozenset[str] = field(default=frozenset())  # moving into these may carry content changes
    source: str = ""  # where the rules come from, for describe_rules()

    def next(self, status: Status) -> tuple[str, ...]:
        """The statuses `status` may move to, in value-set order."""
        allowed = self.transitions.get(status, frozenset())
        return tuple(c for c in self.codes if c in allowed)

    @property
    def final(self) -> tuple[str, ...]:
        return tuple(c for c in self.codes if not self.transitions.get(c))


def _t(**edges: str) -> dict[Status, frozenset[str]]:
    """`_t(draft="active entered-in-error")`: keyword = from-status (`_` for `-`), value = to-statuses."""
    return {k.replace("_", "-"): frozenset(v.split()) for k, v in edges.items()}


# financial-module.html#resource-status (the R5 status life-cycle text), as the product pins it: created draft or
# active; draft -> active | entered-in-error; active -> cancelled; active is immutable except that
# status change ("an error found while active means cancel, then create an amended instance").
FM_STATUS = Lifecycle(
    "fm-status",
    ("draft", "active", "cancelled", "entered-in-error"),
    initial=frozenset({"draft", "active"}),
    transitions=_t(draft="active entered-in-error", active="cancelled"),
    editable=frozenset({"draft"}),
    deletable=frozenset({"draft"}),
    source="financial-module.html#resource-status; FinGate's contract",
)
# ExplanationOfBenefit binds its own value set with the same four codes (status-rules.md §2).
EOB_STATUS = replace(FM_STATUS, value_set="explanationofbenefit-status")

# FinGate's contract: created draft or issued; draft -> issued | entered-in-error; issued -> balanced | cancelled;
# balanced -> issued; content frozen once issued. R5 defines entered-in-error as "determined as entered in error
# before it was issued", which is why issued cannot reach it. A refund reopens a paid invoice: R5's balanced is
# "completely paid", which a refund undoes, so the invoice goes back to issued (app/payments posts the refund
# that way; the balance rules still keep `balanced` for a zero balance).
INVOICE_STATUS = Lifecycle(
    "invoice-status",
    ("draft", "issued", "balanced", "cancelled", "entered-in-error"),
    initial=frozenset({"draft", "issued"}),
    transitions=_t(draft="issued entered-in-error", issued="balanced cancelled", balanced="issued"),
    editable=frozenset({"draft"}),
    deletable=frozenset({"draft"}),
    source="FinGate's contract; R5 invoice-status definitions",
)

# Account (status-rules.md §2) is a long-lived ledger, not a one-shot exchange, and has no draft:
# - "active: This account is active and may be used" and "on-hold: This account is on hold" are the
#   working states; they switch both ways and the account's content (balance, coverage, guarantor)
#   keeps being maintained in both, so neither freezes content.
# - "inactive: ... should not be used to track financial information" freezes content; nothing in its
#   definition makes it final (its canonical status is `inactive`, not `complete`/`abandoned`), so an
#   account may be re-opened (inactive -> active).
# - "entered-in-error: This instance should not have been part of this patient's medical record":
#   reachable from every status (there is no draft to catch errors in) and final.
# - "unknown: The account status is unknown": a migration state resolved to any other status; its
#   content stays editable so the migration can complete it.
# No status is draft-like, so an Account is never deleted: move it to inactive or entered-in-error.
ACCOUNT_STATUS = Lifecycle(
    "account-status",
    ("active", "on-hold", "inactive", "unknown", "entered-in-error"),
    initial=frozenset({"active", "on-hold", "inactive", "unknown"}),
    transitions=_t(
        active="on-hold inactive entered-in-error",
        on_hold="active inactive entered-in-error",
        inactive="active entered-in-error",
        unknown="active on-hold inactive entered-in-error",
    ),
    editable=frozenset({"active", "on-hold", "unknown"}),
    deletable=frozenset(),
    source="R5 account-status definitions (status-rules.md §2)",
)

# Contract (status-rules.md §2): each code's definition gives a "Precedence Order" and a "Usage".
# Reading: a contract only moves forward in precedence order (1 policy, 2 offered, 3 executable,
# 4 negotiable, 5 rejected, 6 executed, 7 disputed, 8 resolved, 9 amended/appended, 10 cancelled,
# 12 terminated, 13 renewed), along the edges the Usage text names:
# - policy "Required initial contract activity, which may have been completed as a precondition" and
#   offered "Beginning of contract negotiation, which may have been completed as a precondition":
#   so a contract may also start later, at executable ("Optional first step of contract execution")
#   or executed (recording an already signed contract); with no status (0..1; most R5 examples).
# - executable "May be skipped and contracting activity moves directly to executed state";
#   negotiable is "between executable and executed"; rejected is "between executable and abnormal
#   termination" (so reachable from executable and negotiable, not from an offer or a policy).
# - executed "Required state for normal completion"; disputed "Contract pended" (7, so only from
#   executed); resolved "a pended contract is reactivated" (8, from disputed only).
# - amended / appended "Contract altered within effective time": both precedence 9, so they follow
#   each other; they are the only way content changes after execution (`amend_into`).
# - cancelled "Abnormal contract termination" and terminated "Normal end of contract period" end an
#   in-force contract; renewed "Follows termination of a preceding Contract" (from terminated only).
# - revoked "A Contract that is rescinded" has no precedence: any not-yet-ended contract may be revoked.
# - entered-in-error "No Precedence Order. Status may be applied to a Contract with any status":
#   from every status, so it is the only truly final one.
# Strictly forward means an amended contract cannot be disputed again (9 -> 7): the text gives no
# edge back, so FinGate does not invent one; this table is the one place to relax it.
# Content is editable until execution (policy .. negotiable, or with no status); delete only before
# anyone signed (policy, offered, no status).
_CONTRACT_ALTERED = "amended appended cancelled terminated revoked entered-in-error"
CONTRACT_STATUS = Lifecycle(
    "contract-status",
    (
        "policy",
        "offered",
        "executable",
        "negotiable",
        "rejected",
        "executed",
        "disputed",
        "resolved",
        "amended",
        "appended",
        "cancelled",
        "terminated",
        "renewed",
        "revoked",
        "entered-in-error",
    ),
    initial=frozenset({None, "policy", "offered", "executable", "executed"}),
    transitions={
        None: frozenset("policy offered executable executed revoked entered-in-error".split()),
        **_t(
            policy="offered executable executed revoked entered-in-error",
            offered="executable executed revoked entered-in-error",
            executable="negotiable executed rejected revoked entered-in-error",
            negotiable="executed rejected revoked entered-in-error",
            executed="disputed " + _CONTRACT_ALTERED,
            disputed="resolved cancelled terminated revoked entered-in-error",
            resolved=_CONTRACT_ALTERED,
            amended=_CONTRACT_ALTERED,
            appended=_CONTRACT_ALTERED,
            rejected="entered-in-error",
            cancelled="entered-in-error",
            terminated="renewed entered-in-error",
            renewed="entered-in-error",
            revoked="entered-in-error",
        ),
    },
    editable=frozenset({None, "policy", "offered", "executable", "negotiable"}),
    deletable=frozenset({None, "policy", "offered"}),
    amend_into=frozenset({"amended", "appended"}),
    source="R5 contract-status definitions: precedence order + usage (status-rules.md §2)",
)

# ChargeItem (R5 chargeitem-status; a billing resource, so it gets a lifecycle). Definitions:
# planned "entered, but the charged service is not yet complete, so it shall not be billed yet";
# billable "ready for billing"; not-billable "determined to be not billable"; aborted "The processing
# of the charge was aborted"; billed "a billing engine has ... placed them into Claims/Invoices";
# entered-in-error "entered in error and should not be processed for billing" (so: before billing);
# unknown "The authoring system does not know which of the status values currently applies".
# Once billed, corrections happen on the Claim/Invoice, so billed, aborted, entered-in-error are final
# and frozen; planned is the draft-like status.
CHARGEITEM_STATUS = Lifecycle(
    "chargeitem-status",
    ("planned", "billable", "not-billable", "billed", "aborted", "entered-in-error", "unknown"),
    initial=frozenset({"planned", "billable", "not-billable", "billed", "unknown"}),
    transitions=_t(
        planned="billable not-billable aborted entered-in-error",
        billable="not-billable billed aborted entered-in-error",
        not_billable="billable aborted entered-in-error",
        unknown="planned billable not-billable billed aborted entered-in-error",
    ),
    editable=frozenset({"planned", "billable", "not-billable", "unknown"}),
    deletable=frozenset({"planned"}),
    source="R5 chargeitem-status definitions",
)

# InsurancePlan (R5 publication-status): draft "still under development"; active "ready for normal
# use"; retired "withdrawn or superseded and should no longer be used"; unknown. A plan is catalogue
# data maintained while active (networks, contacts), so only retired freezes it.
PUBLICATION_STATUS = Lifecycle(
    "publication-status",
    ("draft", "active", "retired", "unknown"),
    initial=frozenset({"draft", "active", "unknown"}),
    transitions=_t(draft="active retired", active="retired", unknown="draft active retired"),
    editable=frozenset({"draft", "active", "unknown"}),
    deletable=frozenset({"draft"}),
    source="R5 publication-status definitions",
)

LIFECYCLES: dict[str, Lifecycle] = {
    lc.value_set: lc
    for lc in (
        FM_STATUS,
        EOB_STATUS,
        INVOICE_STATUS,
        ACCOUNT_STATUS,
        CONTRACT_STATUS,
        CHARGEITEM_STATUS,
        PUBLICATION_STATUS,
    )
}

# Every served type -> its lifecycle's value set, or None: no lifecycle enforced. The None types are
# the clinical and administrative resources served so that financial references resolve; their
# workflows (Encounter, Task, Location status) belong to the systems that own them, and FinGate
# refusing their updates would only make copies drift. A test fails when a served type is missing.
RESOURCE_LIFECYCLE: dict[str, str | None] = {
    "Account": "account-status",
    "ChargeItem": "chargeitem-status",
    "Claim": "fm-status",
    "ClaimResponse": "fm-status",
    "Contract": "contract-status",
    "Coverage": "fm-status",
    "CoverageEligibilityRequest": "fm-status",
    "CoverageEligibilityResponse": "fm-status",
    "Encounter": None,
    "EnrollmentRequest": "fm-status",
    "EnrollmentResponse": "fm-status",
    "ExplanationOfBenefit": "explanationofbenefit-status",
    "InsurancePlan": "publication-status",
    "Invoice": "invoice-status",
    "Location": None,
    "Organization": None,
    "Patient": None,
    "PaymentNotice": "fm-status",
    "PaymentReconciliation": "fm-status",
    "Practitioner": None,
    "PractitionerRole": None,
    "RelatedPerson": None,
    "Subscription": None,  # requested | active | error | off: the client's and the server's to move, either way
    "SubscriptionTopic": "publication-status",
    "Task": None,
}

# Elements that may change together with a permitted status change (where the type has them);
# `id` and `meta` are the server's and never count as content.
STATUS_ELEMENTS: tuple[str, ...] = ("status", "statusReason", "cancelledReason")
IGNORED_ELEMENTS: frozenset[str] = frozenset({"id", "meta"})


@dataclass(frozen=True)
class ReferenceRule:
    """A reference that must resolve on this server (when it points inside it) to a resource in `statuses`."""

    rule: str
    resource_type: str
    path: str  # dotted JSON path to the Reference, through lists: `allocation.target`
    target_types: tuple[str, ...] | None  # None: any served type the reference names
    statuses: tuple[str, ...] | None  # None: any status
    fix: str  # how the client fixes it
    by_type: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)  # target type -> its own statuses
    recheck_into: frozenset[str] = frozenset({"active"})  # entering these re-checks unchanged references too

    def statuses_for(self, target_type: str) -> tuple[str, ...] | None:
        return self.by_type.get(target_type, self.statuses)


@dataclass(frozen=True)
class ReferrerRule:
    """A status change refused while other resources found by a search still depend on this one."""

    rule: str
    resource_type: str
    into: frozenset[str]  # the statuses whose entry is guarded
    search_type: str
    search: Mapping[str, str]  # R5 search params; `{ref}` is this resource's `Type/id`
    fix: str


# What a payment may be allocated to (R5 PaymentReconciliation.allocation.target's types), and in which
# statuses each is in force. Settled-but-valid states count (a balanced Invoice, a billed ChargeItem):
# history loads a paid invoice before the payment that paid it. Account: active and on-hold are its
# working states; Contract: executed and its in-force successors. Encounter has no FinGate lifecycle,
# so only the two statuses that void it are left out.
ALLOCATABLE: Mapping[str, tuple[str, ...] | None] = {
    "Claim": ("active",),
    "Account": ("active", "on-hold"),
    "Invoice": ("issued", "balanced"),
    "ChargeItem": ("billable", "billed"),
    "Contract": ("executed", "resolved", "amended", "appended"),
    "Encounter": ("planned", "in-progress", "on-hold", "discharged", "completed", "discontinued", "unknown"),
}

# A response answers an exchanged request, and the life-cycle text makes a request `active` exactly
# when it is exchanged, so all three request/response pairs require an active request.
REFERENCE_RULES: tuple[ReferenceRule, ...] = (
    ReferenceRule(
        "ClaimResponse.request-exists",
        "ClaimResponse",
        "request",
        ("Claim",),
        ("active",),
        "create and activate the Claim first, or reference an external claim by absolute URL or identifier",
    ),
    ReferenceRule(
        "CoverageEligibilityResponse.request-exists",
        "CoverageEligibilityResponse",
        "request",
        ("CoverageEligibilityRequest",),
        ("active",),
        "create and activate the CoverageEligibilityRequest first, or reference an external one by absolute URL or identifier",
    ),
    ReferenceRule(
        "EnrollmentResponse.request-exists",
        "EnrollmentResponse",
        "request",
        ("EnrollmentRequest",),
        ("active",),
        "create and activate the EnrollmentRequest first, or reference an external one by absolute URL or identifier",
    ),
    ReferenceRule(
        "PaymentReconciliation.allocation-target-exists",
        "PaymentReconciliation",
        "allocation.target",
        None,
        None,
        "allocate only to a target in force (or reference an external one by absolute URL or identifier)",
        by_type=ALLOCATABLE,
    ),
    ReferenceRule(
        "PaymentReconciliation.allocation-response-exists",
        "PaymentReconciliation",
        "allocation.response",
        ("ClaimResponse",),
        ("active",),
        "name an active ClaimResponse (or reference an external one by absolute URL or identifier)",
    ),
)

# Entering entered-in-error is guarded too: a payment allocated to an erroneous claim is as wrong
# as one allocated to a cancelled claim.
REFERRER_RULES: tuple[ReferrerRule, ...] = (
    ReferrerRule(
        "Claim.cancel-allocated",
        "Claim",
        frozenset({"cancelled", "entered-in-error"}),
        "PaymentReconciliation",
        {"allocation-target": "{ref}", "status": "active"},
        "cancel those PaymentReconciliations first (and re-issue them without this Claim)",
    ),
    ReferrerRule(
        "Invoice.cancel-allocated",
        "Invoice",
        frozenset({"cancelled", "entered-in-error"}),
        "PaymentReconciliation",
        {"allocation-target": "{ref}", "status": "active"},
        "cancel those PaymentReconciliations first (and re-issue them without this Invoice)",
    ),
    ReferrerRule(
        "ChargeItem.void-allocated",
        "ChargeItem",
        frozenset({"not-billable", "aborted", "entered-in-error"}),
        "PaymentReconciliation",
        {"allocation-target": "{ref}", "status": "active"},
        "cancel those PaymentReconciliations first (and re-issue them without this ChargeItem)",
    ),
    # An Account may still close (inactive) after its payments; only calling it an error voids them.
    ReferrerRule(
        "Account.error-allocated",
        "Account",
        frozenset({"entered-in-error"}),
        "PaymentReconciliation",
        {"allocation-target": "{ref}", "status": "active"},
        "cancel those PaymentReconciliations first (and re-issue them without this Account)",
    ),
)


@dataclass(frozen=True)
class BalanceRule:
    """A limit on what payments may do to a settled target (a Claim, an Invoice), over the sums app.billing computes.

    `kind` is `within-total` (active allocations may not take the target past its total, unless the tenant
    allows overpayment) or `balanced-when-settled` (`balanced` only at a zero balance, and a balanced target's
    payments may not change). Both are checked whichever side is written last: the PaymentReconciliation
    (created, changed, activated, cancelled) or the target (its total edited, its status moved).
    """

    rule: str
    resource_type: str
    kind: str
    element: str  # the target's element the rule guards
    fix: str


BALANCE_RULES: tuple[BalanceRule, ...] = (
    BalanceRule(
        "Claim.paid-within-total",
        "Claim",
        "within-total",
        "total",
        "allocate at most the Claim's outstanding amount (billing.outstanding), or allow overpayment for the tenant "
        "(FINGATE_ALLOW_OVERPAYMENT)",
    ),
    BalanceRule(
        "Invoice.paid-within-total",
        "Invoice",
        "within-total",
        "totalGross",
        "allocate at most the Invoice's balance (billing.balance), or allow overpayment for the tenant "
        "(FINGATE_ALLOW_OVERPAYMENT)",
    ),
    BalanceRule(
        "Invoice.balanced-when-settled",
        "Invoice",
        "balanced-when-settled",
        "status",
        "move the Invoice to balanced once active payments settle it exactly (billing.balance is zero in every "
        "currency); a balanced Invoice's payments stay as they are",
    ),
)


@dataclass(frozen=True)
class AnswerRule:
    """In each item at `path`, the resource `response` names must point back (by `via`) at what `target` names."""

    rule: str
    resource_type: str
    path: str  # the list holding the pairs: `allocation`
    response: str  # the element naming the answer: `response` (a ClaimResponse)
    via: str  # the answer's own element naming what it answers: ClaimResponse.request
    target: str  # the element it must match: `target`
    fix: str


ANSWER_RULES: tuple[AnswerRule, ...] = (
    AnswerRule(
        "PaymentReconciliation.allocation-response-answers-target",
        "PaymentReconciliation",
        "allocation",
        "response",
        "request",
        "target",
        "name the ClaimResponse whose request is this allocation's target Claim",
    ),
)


@dataclass(frozen=True)
class AmountRule:
    """A document's parts (`parts`, Money) are in the currency of its `total` and add up to at most it."""

    rule: str
    resource_type: str
    total: str  # a Money element: `amount`
    parts: str  # dotted path to the Money of each part: `allocation.amount`
    fix: str


# A payment cannot allocate money it does not carry, nor another currency's (R5 has no exchange rate on an
# allocation). BAD_USER_INPUT: the document is wrong in itself, whatever else is stored.
AMOUNT_RULES: tuple[AmountRule, ...] = (
    AmountRule(
        "PaymentReconciliation.allocation-within-amount",
        "PaymentReconciliation",
        "amount",
        "allocation.amount",
        "allocate in the payment's currency and no more than its amount",
    ),
)

# A financial record in one of these statuses is in force: the resources it references must not be
# deleted under it (drafts, cancelled and erroneous records do not hold anything). The referencing
# elements are the type's reference search parameters (R5's and FinGate's), whose indexed values are
# queried: one query per referring type.
IN_FORCE: Mapping[str, tuple[str, ...]] = {
    "Account": ("active", "on-hold"),
    "ChargeItem": ("billable", "billed"),
    "Claim": ("active",),
    "ClaimResponse": ("active",),
    "Contract": ("executed", "resolved", "amended", "appended"),
    "Coverage": ("active",),
    "CoverageEligibilityRequest": ("active",),
    "CoverageEligibilityResponse": ("active",),
    "EnrollmentRequest": ("active",),
    "EnrollmentResponse": ("active",),
    "ExplanationOfBenefit": ("active",),
    "Invoice": ("issued", "balanced"),
    "PaymentNotice": ("active",),
    "PaymentReconciliation": ("active",),
}
