"""Filters of ``GET /proposals``: each enum parameter accepts exactly its documented values.

Enum parameters use ``twins.filters.StrictChoiceFilter``: an empty value is a 400 like any other
value outside the enum; an absent parameter still means "any".
"""

from __future__ import annotations

import django_filters

from policy.choices import Decision, ProposalStatus, RiskLevel
from policy.models import Proposal
from twins.filters import StrictChoiceFilter


class ProposalFilterSet(django_filters.FilterSet):
    """``?status=``, ``?decision=``, ``?risk_level=`` (enums, 400 outside them) and
    ``?action=`` (an exact action name)."""

    status = StrictChoiceFilter(choices=ProposalStatus.choices)
    decision = StrictChoiceFilter(choices=Decision.choices)
    risk_level = StrictChoiceFilter(choices=RiskLevel.choices)

    class Meta:
        model = Proposal
        fields = ["status", "decision", "risk_level", "action"]
