"""API shapes of the policy app: proposal.v1, the request bodies, audit.v1."""

from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers

from policy.actions import CATALOGUE
from policy.catalogue import asset_action_errors, parameter_errors, proposal_request_branches
from policy.models import Approval, Proposal
from twins.models import AuditEntry


class ApprovalSerializer(serializers.ModelSerializer):
    """approval.v1: who approved, in which role, until when, and whether it still counts."""

    approver = serializers.CharField(source="approver.get_username", read_only=True)
    voided = serializers.SerializerMethodField()

    class Meta:
        model = Approval
        fields = ["approver", "role", "created_at", "expires_at", "voided"]

    def get_voided(self, approval: Approval) -> bool:
        return approval.invalidated_at is not None


class ProposalSerializer(serializers.ModelSerializer):
    """proposal.v1: the action, its evidence, the policy decision, approvals and outcomes."""

    twin = serializers.CharField(source="twin.slug", read_only=True)
    asset = serializers.CharField(source="asset.slug", read_only=True)
    proposed_by = serializers.SerializerMethodField()
    decided_by = serializers.SerializerMethodField()
    approvals = ApprovalSerializer(many=True, read_only=True)
    stale = serializers.BooleanField(source="is_stale", read_only=True)

    class Meta:
        model = Proposal
        fields = [
            "id", "twin", "asset", "anomaly", "simulation", "action", "parameters",
            "risk_level", "confidence", "confidence_breakdown", "decision", "decision_trace",
            "status", "proposed_by", "decided_by", "reason", "policy_version", "policy_trusted",
            "approvals_required", "approvals", "evidence", "stale", "stale_at", "expires_at",
            "execution", "rollback_action", "rollback", "verification", "verify_until",
            "revision", "created_at", "decided_at", "executed_at",
        ]

    def get_proposed_by(self, proposal: Proposal) -> str:
        return proposal.proposed_by.get_username() if proposal.proposed_by else "system"

    def get_decided_by(self, proposal: Proposal) -> str | None:
        return proposal.decided_by.get_username() if proposal.decided_by else None


class ActionRequestSerializer(serializers.Serializer):
    """A proposed action (POST /proposals and the dry run POST /policy/evaluate)."""

    twin = serializers.SlugField()
    asset = serializers.SlugField()
    action = serializers.CharField(
        min_length=1, max_length=64,
        help_text="An action of the catalogue (GET /actions) for the asset's kind.")
    parameters = serializers.DictField(
        required=False, default=dict,
        help_text="Valid against the action's parameters schema in the catalogue.")
    anomaly = serializers.IntegerField(required=False, allow_null=True, default=None)
    metrics = serializers.ListField(child=serializers.CharField(min_length=1, max_length=64),
                                    required=False, allow_empty=False, min_length=1,
                                    default=None)


class ActionRequestScheme(OpenApiSerializerExtension):
    """OpenAPI: the proposal body as the catalogue constrains it: ``action`` one of the
    proposable actions, and ``oneOf`` branch per action giving its parameters' schema (the
    asset kind's own list is at GET /actions)."""

    target_class = ActionRequestSerializer

    def map_serializer(self, auto_schema, direction) -> dict:
        schema = super().map_serializer(auto_schema, direction)
        schema["properties"]["action"]["enum"] = [n for n, s in CATALOGUE.items()
                                                  if s.proposable]
        schema["oneOf"] = proposal_request_branches()
        return schema


def check_action(asset, action: str, parameters) -> None:
    """Refuse an action outside the catalogue of ``asset``'s kind, or parameters outside its
    schema: DRF ``ValidationError`` (a 400 problem) naming the field, e.g.
    ``{"parameters": {"fraction": ["1e+16 is greater than the maximum of 1"]}}``."""
    if problems := asset_action_errors(asset, action):
        raise serializers.ValidationError({"action": problems})
    if problems := parameter_errors(action, parameters):
        raise serializers.ValidationError({"parameters": problems})


class RejectSerializer(serializers.Serializer):
    reason = serializers.CharField(min_length=3, max_length=2000)


class RollbackSerializer(serializers.Serializer):
    reason = serializers.CharField(min_length=3, max_length=2000)


class AuditEntrySerializer(serializers.ModelSerializer):
    """audit.v1."""

    class Meta:
        model = AuditEntry
        fields = [
            "seq", "at", "actor", "role", "action", "resource_type", "resource_id", "twin_slug",
            "before", "after", "reason", "request_id", "client_address", "prev_hash", "hash",
        ]
