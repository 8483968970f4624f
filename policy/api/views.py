"""Proposal API (list, read, propose, approve, reject, execute, roll back, re-simulate) and the
policy dry run. Every route is scoped by ``TwinScopedViewSetMixin`` / ``get_scoped_or_404``:
an object on a twin outside the caller's scope is 404; a visible one the caller may not act on
is 403 (from ``policy.services``).

Execute and roll back answer ``202 Accepted`` once the command is claimed (pre-flight checks
and the claim run in the request, so a refusal is still 4xx/409): the proposal, now
``executing`` (or rolling back), with ``Location: /proposals/{id}``. The command is sent and
its acknowledgement awaited on the ``actions`` queue; the outcome arrives on the change feed
(``/diff``, ``/subscribe``, ``/ws/feed``) and on the proposal itself."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from policy import services
from policy.api.serializers import (
    ActionRequestSerializer,
    ProposalSerializer,
    RejectSerializer,
    RollbackSerializer,
    check_action,
)
from policy.filtersets import ProposalFilterSet
from policy.models import Proposal
from policy.services.common import require
from telemetry.models import Anomaly
from twins.models import Asset
from twins.problems import PROBLEMS_EXTENSION
from twins.scoping import TwinScopedViewSetMixin, get_scoped_or_404


def resolve_action_request(request) -> dict:
    """Validated body with ``asset`` and ``anomaly`` resolved in the caller's scope (404),
    the caller allowed to propose there (403), the action and its parameters in the asset
    kind's catalogue (400 naming the field)."""
    body = ActionRequestSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    data = dict(body.validated_data)
    data["asset"] = get_scoped_or_404(Asset.objects.select_related("twin"), request.user,
                                      twin__slug=data.pop("twin"), slug=data["asset"])
    require(request.user, "policy.add_proposal", data["asset"].twin)  # 403 before 400
    check_action(data["asset"], data["action"], data["parameters"])
    if data["anomaly"] is not None:
        data["anomaly"] = Anomaly.objects.filter(pk=data["anomaly"], asset=data["asset"]).first()
        if data["anomaly"] is None:
            raise ValidationError({"anomaly": "no such anomaly on this asset"})
    return data


ACCEPTED = OpenApiResponse(ProposalSerializer, description=(
    "Accepted: the command is claimed and queued. Location: /proposals/{id}."))
EXECUTE_DOC = (
    "Claim the approved proposal's execution (pre-flight checks: expiry, approvals or policy "
    "trust, evidence drift, interlocks) and queue its command. 202: now `executing`; the "
    "outcome (executed → verifying, or failed) follows on the change feed and at `Location`. "
    "Refusals: 403, 409 (not approved, lost race, interlock blocked, stale evidence, expired).")
ROLLBACK_DOC = (
    "Claim the rollback of an executed proposal and queue its rollback command. 202: "
    "`rollback_started_at` set; the outcome (rolled_back, or failed) follows on the change "
    "feed and at `Location`. Refusals: 403, 409 (wrong state, already rolling back, no "
    "rollback action, interlock blocked).")
CONFLICT = {PROBLEMS_EXTENSION: [409]}  # the proposal's state does not allow the transition
LOCATION = OpenApiParameter("Location", str, OpenApiParameter.HEADER, response=[202],
                            description="The proposal: /proposals/{id}")


class ProposalViewSet(TwinScopedViewSetMixin, mixins.ListModelMixin,
                      mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Proposals of the twins the caller may see."""

    queryset = Proposal.objects.select_related(
        "twin", "asset", "proposed_by", "decided_by").prefetch_related("approvals__approver")
    serializer_class = ProposalSerializer
    filterset_class = ProposalFilterSet

    def _act(self, fn, *, accepted: bool = False, **kwargs) -> Response:
        proposal = self.get_object()  # 404 outside the caller's scope
        proposal = fn(proposal.pk, actor=self.request.user, request=self.request, **kwargs)
        if not accepted:
            return Response(ProposalSerializer(proposal).data)
        location = reverse("proposal-detail", kwargs={"pk": proposal.pk})
        return Response(ProposalSerializer(proposal).data, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": location})

    @extend_schema(summary="List the proposals of the twins the caller may see",
                   responses=ProposalSerializer(many=True))
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(summary="Read one proposal", responses=ProposalSerializer)
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(summary="Propose an action on an asset (simulated, then decided)",
                   request=ActionRequestSerializer, responses={201: ProposalSerializer},
                   extensions={PROBLEMS_EXTENSION: [404]})
    def create(self, request):
        """Propose an action: it is simulated on the asset's current state, then decided."""
        data = resolve_action_request(request)
        proposal = services.propose_action(actor=request.user, request=request, **data)
        return Response(ProposalSerializer(proposal).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Approve a pending proposal (four-eyes: not the proposer's own)",
                   request=None, responses=ProposalSerializer, extensions=CONFLICT)
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._act(services.approve_proposal)

    @extend_schema(summary="Reject a pending proposal, with a reason",
                   request=RejectSerializer, responses=ProposalSerializer, extensions=CONFLICT)
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        body = RejectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._act(services.reject_proposal, reason=body.validated_data["reason"])

    @extend_schema(summary="Execute an approved proposal: claim it and queue its command",
                   request=None, responses={202: ACCEPTED}, parameters=[LOCATION],
                   description=EXECUTE_DOC, extensions=CONFLICT)
    @action(detail=True, methods=["post"])
    def execute(self, request, pk=None):
        return self._act(services.start_execution, accepted=True)

    @extend_schema(summary="Roll back an executed proposal, with a reason",
                   request=RollbackSerializer, responses={202: ACCEPTED}, parameters=[LOCATION],
                   description=ROLLBACK_DOC, extensions=CONFLICT)
    @action(detail=True, methods=["post"])
    def rollback(self, request, pk=None):
        body = RollbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._act(services.start_rollback, accepted=True,
                         reason=body.validated_data["reason"])

    @extend_schema(summary="Re-simulate a proposal on the asset's current state",
                   request=None, responses=ProposalSerializer, extensions=CONFLICT)
    @action(detail=True, methods=["post"])
    def resimulate(self, request, pk=None):
        return self._act(services.resimulate_proposal)


class EvaluateView(APIView):
    """POST /policy/evaluate: what would happen if I proposed this? Changes nothing."""

    @extend_schema(summary="Dry run: what the policy would decide for this action",
                   request=ActionRequestSerializer, responses={200: dict},
                   extensions={PROBLEMS_EXTENSION: [404]})
    def post(self, request):
        data = resolve_action_request(request)
        require(request.user, "policy.add_proposal", data["asset"].twin)
        return Response(services.evaluate_proposal(actor=request.user, **data))
