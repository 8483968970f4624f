from rest_framework import serializers

from policy.models import AuditEntry, Proposal


class ProposalSerializer(serializers.ModelSerializer):
    """proposal.v1: the action, its evidence, the policy decision and the current status."""

    twin = serializers.CharField(source="twin.slug", read_only=True)
    asset = serializers.CharField(source="asset.slug", read_only=True)
    proposed_by = serializers.SerializerMethodField()
    decided_by = serializers.SerializerMethodField()

    class Meta:
        model = Proposal
        fields = [
            "id", "twin", "asset", "anomaly", "simulation", "action", "parameters",
            "risk_level", "confidence", "confidence_breakdown", "decision", "decision_trace",
            "status", "proposed_by", "decided_by", "reason", "execution", "created_at",
            "decided_at", "executed_at",
        ]

    def get_proposed_by(self, proposal: Proposal) -> str:
        return proposal.proposed_by.get_username() if proposal.proposed_by else "system"

    def get_decided_by(self, proposal: Proposal) -> str | None:
        return proposal.decided_by.get_username() if proposal.decided_by else None


class RejectSerializer(serializers.Serializer):
    reason = serializers.CharField(min_length=3, max_length=2000)


class AuditEntrySerializer(serializers.ModelSerializer):
    """audit.v1."""

    class Meta:
        model = AuditEntry
        fields = [
            "seq", "at", "actor", "role", "action", "resource_type", "resource_id", "twin_slug",
            "before", "after", "reason", "request_id", "client_address", "prev_hash", "hash",
        ]
