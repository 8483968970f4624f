"""Proposal API: list, read, approve, reject, execute (all through ``policy.services``)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from aiw.problems import policy_problem
from policy import services
from policy.api.serializers import ProposalSerializer, RejectSerializer
from policy.errors import PolicyError
from policy.models import Proposal
from twins.scoping import visible_twins


class ProposalViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Proposals of the twins the caller may see; objects out of scope are 404."""

    serializer_class = ProposalSerializer
    filterset_fields = ["status", "decision", "risk_level", "action"]

    def get_queryset(self):
        return Proposal.objects.filter(twin__in=visible_twins(self.request.user)).select_related(
            "twin", "asset", "proposed_by", "decided_by"
        )

    def _act(self, fn, **kwargs) -> Response:
        proposal = self.get_object()  # 404 outside the caller's scope
        try:
            proposal = fn(proposal.pk, actor=self.request.user, request=self.request, **kwargs)
        except PolicyError as exc:
            return policy_problem(exc)
        return Response(ProposalSerializer(proposal).data)

    @extend_schema(request=None, responses=ProposalSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._act(services.approve_proposal)

    @extend_schema(request=RejectSerializer, responses=ProposalSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        body = RejectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._act(services.reject_proposal, reason=body.validated_data["reason"])

    @extend_schema(request=None, responses=ProposalSerializer)
    @action(detail=True, methods=["post"])
    def execute(self, request, pk=None):
        return self._act(services.execute_proposal)
