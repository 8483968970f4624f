"""Read-only queries of the supervisor console: the plant's state, what waits, what happened.

Nothing here writes. Every query starts from ``twins.scoping`` (``visible_twins`` / ``scoped``)
or, for audit entries, from the same rule the change feed uses (``twins.feed_scope.scope_for``), so
the console shows exactly what the API and the feed would show the same user.

Query counts are bounded by the number of twins shown, never by assets, anomalies or samples:
``asset_states`` runs four queries (assets, open anomalies, in-flight proposals, the twin
model's reported state, judged by ``twins.state.state_of``) whatever the plant's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from policy.choices import ProposalStatus
from policy.models import PolicyDocument, PolicyHighWater, Proposal
from policy.trust import ActivePolicy, assess
from telemetry.choices import AnomalyStatus, Severity
from telemetry.models import Anomaly
from twins.feed_scope import scope_for
from twins.models import Asset, AuditEntry, ReportedMetric, Twin
from twins.scoping import scoped, visible_twins
from twins.state import AWAITING, CONVERGING, LIVE, SILENT, UNKNOWN, silent_sql, state_of

#: Severities, worst first (the order tiles and counts use).
SEVERITIES = [Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW]
#: Statuses of an action between the decision to run it and its verdict.
IN_FLIGHT = [ProposalStatus.APPROVED, ProposalStatus.EXECUTING, ProposalStatus.EXECUTED,
             ProposalStatus.VERIFYING]


@dataclass
class AssetState:
    """One asset's tile: ``state`` is ``in_flight`` (a proposal between approval and verdict,
    or the twin model's delta still awaiting or converging on a command), ``anomalous``,
    ``silent``, ``normal``, ``unknown`` (it reports, but its sampling interval is not known
    yet) or ``no_data`` (that precedence); ``open_by_severity`` counts open anomalies;
    ``twin_state`` is the asset's asset-state.v1 (``twins.state``: liveness judged on
    OpsTwin's receipt clock, reported values, desired state and delta), the same document
    the ``asset.state`` feed events carry.
    """

    asset: Asset
    open_by_severity: dict[str, int] = field(default_factory=dict)
    in_flight: list[Proposal] = field(default_factory=list)
    twin_state: dict = field(default_factory=dict)

    @property
    def open_anomalies(self) -> int:
        return sum(self.open_by_severity.values())

    @property
    def worst_severity(self) -> str | None:
        return next((s for s in SEVERITIES if self.open_by_severity.get(s)), None)

    @property
    def liveness(self) -> str:
        """``live``, ``silent`` or ``unknown`` (asset-state.v1)."""
        return self.twin_state.get("liveness", UNKNOWN)

    @property
    def last_received(self) -> datetime | None:
        """When OpsTwin last received a reading of the asset (its clock), None: never."""
        return parse_datetime(self.twin_state.get("last_received_at") or "")

    @property
    def silent_at(self) -> datetime | None:
        """When the asset turns silent if nothing more arrives (None: cadence unknown)."""
        after = self.twin_state.get("silent_after_seconds")
        last = self.last_received
        return last + timedelta(seconds=after) if last is not None and after else None

    @property
    def silent(self) -> bool:
        return self.liveness == SILENT

    @property
    def delta(self) -> list[dict]:
        """Metrics not (yet) where the last command wanted them (asset-state.v1 ``delta``)."""
        return self.twin_state.get("delta", [])

    @property
    def state(self) -> str:
        if self.in_flight or any(d["status"] in (AWAITING, CONVERGING) for d in self.delta):
            return "in_flight"
        if self.open_anomalies:
            return "anomalous"
        if self.last_received is None:
            return "no_data"
        return {SILENT: "silent", LIVE: "normal"}.get(self.liveness, "unknown")


class Reading:
    """A ``twins.models.ReportedMetric`` row as ``twins.state.state_of`` reads it, without a
    model instance: the overview reads eight of them per asset, a thousand assets at once."""

    __slots__ = ("metric", "value", "ts", "received_at", "cadence_seconds")

    def __init__(self, metric, value, ts, received_at, cadence_seconds):
        self.metric, self.value, self.ts = metric, value, ts
        self.received_at, self.cadence_seconds = received_at, cadence_seconds


def visible_assets(user, twins: QuerySet[Twin] | None = None) -> QuerySet[Asset]:
    """Assets of the visible twins (or of ``twins``, narrowed to the visible ones), in twin
    and asset slug order."""
    allowed = visible_twins(user) if twins is None else twins.filter(pk__in=visible_twins(user))
    return Asset.objects.filter(twin__in=allowed).select_related("twin", "asset_type").order_by(
        "twin__slug", "slug")


#: ``Asset.problem`` ranks after the four severities (0..3): an action in flight, silent, none.
PROBLEM_IN_FLIGHT, PROBLEM_SILENT, PROBLEM_NONE = 4, 5, 6

def assets_by_problem(user, now: datetime | None = None) -> QuerySet[Asset]:
    """``visible_assets`` with the problems first, so the overview's first page shows them:
    annotated ``problem`` = the worst open anomaly's severity rank (0 critical … 3 low), else
    4 with an action in flight (a proposal in ``IN_FLIGHT``), else 5 when silent at ``now``
    (default: the current time), else 6; then twin and asset slug. One query (correlated
    subqueries), whatever the plant's size."""
    now = now or timezone.now()
    worst = (Anomaly.objects.filter(asset=OuterRef("pk"), status=AnomalyStatus.OPEN)
             .annotate(rank=severity_rank("severity")).order_by("rank").values("rank")[:1])
    in_flight = Proposal.objects.filter(asset=OuterRef("pk"), status__in=IN_FLIGHT)
    rank = Case(When(Exists(in_flight), then=Value(PROBLEM_IN_FLIGHT)),
                When(silent_sql(now), then=Value(PROBLEM_SILENT)),
                default=Value(PROBLEM_NONE), output_field=IntegerField())
    return visible_assets(user).annotate(
        problem=Coalesce(Subquery(worst, output_field=IntegerField()), rank)
    ).order_by("problem", "twin__slug", "slug")


def asset_states(user, twins: QuerySet[Twin] | None = None, now: datetime | None = None,
                 assets: list[Asset] | None = None) -> dict[Twin, list[AssetState]]:
    """Each visible twin (or of ``twins``) → its assets' states (``visible_assets``, or the
    given page of them, ``assets``, twin and asset type loaded), twins and assets in slug order.
    ``now`` defaults to the current time. Four queries whatever the number of assets."""
    now = now or timezone.now()
    assets = list(visible_assets(user, twins)) if assets is None else list(assets)
    states = {a.pk: AssetState(a) for a in assets}
    open_rows = (Anomaly.objects.filter(asset_id__in=states, status=AnomalyStatus.OPEN)
                 .values_list("asset_id", "severity").annotate(n=Count("id")).order_by())
    for asset_id, severity, n in open_rows:
        states[asset_id].open_by_severity[severity] = n
    for proposal in Proposal.objects.filter(asset_id__in=states, status__in=IN_FLIGHT) \
            .only("pk", "asset_id", "action", "status").order_by("created_at"):
        states[proposal.asset_id].in_flight.append(proposal)
    reported: dict[int, list[Reading]] = {}
    for row in ReportedMetric.objects.filter(asset_id__in=states).order_by(
            "asset_id", "metric").values_list("asset_id", *Reading.__slots__):
        reported.setdefault(row[0], []).append(Reading(*row[1:]))
    for asset in assets:
        states[asset.pk].twin_state = state_of(asset, reported.get(asset.pk, []), now)
    grouped: dict[Twin, list[AssetState]] = {}
    for asset in assets:
        grouped.setdefault(asset.twin, []).append(states[asset.pk])
    return grouped


def open_anomaly_counts(user) -> dict[str, int]:
    """Open anomalies on visible twins by severity, every severity present (0 when none)."""
    rows = dict(scoped(Anomaly.objects, user, "asset__twin").filter(status=AnomalyStatus.OPEN)
                .values_list("severity").annotate(n=Count("id")).order_by())
    return {s: rows.get(s, 0) for s in SEVERITIES}


def severity_rank(field: str) -> Case:
    """SQL rank of the severity in ``field`` (a lookup path): 0 critical … 3 low, 4 none."""
    return Case(*(When(**{field: s}, then=Value(k)) for k, s in enumerate(SEVERITIES)),
                default=Value(len(SEVERITIES)), output_field=IntegerField())


def pending_by_urgency(user, proposals: QuerySet[Proposal]) -> QuerySet[Proposal]:
    """Pending proposals on visible twins, most urgent first, ordered in SQL (so a page of
    them is the most urgent page): the triggering anomaly's severity (critical first, none
    last; annotated ``urgency``, 0..4), then the soonest expiry (none last), then id."""
    return (scoped(proposals, user).filter(status=ProposalStatus.PENDING_APPROVAL)
            .annotate(urgency=severity_rank("anomaly__severity"))
            .order_by("urgency", F("expires_at").asc(nulls_last=True), "pk"))


def approval_queue(user, proposals: QuerySet[Proposal], limit: int = 50) -> list[Proposal]:
    """The ``limit`` most urgent pending proposals (``pending_by_urgency``). Each carries
    ``.expired`` (its ``expires_at`` passed while still pending: the expiry sweep has not
    run yet)."""
    now = timezone.now()
    pending = list(pending_by_urgency(user, proposals)[:limit])
    for p in pending:
        p.expired = p.expires_at is not None and p.expires_at <= now
    return pending


def recently_expired(user, proposals: QuerySet[Proposal], hours: int = 24,
                     limit: int = 20) -> QuerySet[Proposal]:
    """Proposals that expired without a decision in the last ``hours`` (newest expiry first)."""
    since = timezone.now() - timedelta(hours=hours)
    return scoped(proposals, user).filter(status=ProposalStatus.EXPIRED,
                                          expires_at__gte=since).order_by("-expires_at")[:limit]


def visible_audit(user) -> QuerySet[AuditEntry]:
    """Audit entries ``user`` may read: those of visible twins, and twin-less ones under the
    change feed's rule (``twins.feed_scope``: admins see all, others their own)."""
    if not user.is_authenticated:
        return AuditEntry.objects.none()
    scope = scope_for(user)
    where = Q(twin_slug__in=visible_twins(user).values("slug"))
    if scope.every_twinless:
        where |= Q(twin_slug="")
    elif scope.actor:
        where |= Q(twin_slug="", actor=scope.actor)
    return AuditEntry.objects.filter(where)



def policy_verdicts(twins: list[Twin]) -> dict[int, ActivePolicy]:
    """twin id → the policy in force, as ``policy.services.active_policy`` judges it, in two
    queries for any number of twins (newest documents, high-water marks) and without its
    side effect: a display never records an acceptance."""
    ids = [t.pk for t in twins]
    newest = {d.twin_id: d for d in PolicyDocument.objects.filter(twin_id__in=ids)
              .order_by("twin_id", "-version").distinct("twin_id")}
    marks = {m.twin_id: m for m in PolicyHighWater.objects.filter(twin_id__in=ids)}
    return {t.pk: assess(t.slug, newest.get(t.pk), marks.get(t.pk)) for t in twins}
