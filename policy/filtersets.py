"""Filters of ``GET /proposals``: each enum parameter accepts exactly its documented values.

django-filter's ``ChoiceFilter`` treats ``?decision=`` (present but empty) as "no filter", so a
request outside the OpenAPI enum would be answered 200 with every proposal. Here an empty value
is a 400 like any other value outside the enum; an absent parameter still means "any".
"""

from __future__ import annotations

import django_filters
from django import forms

from policy.choices import Decision, ProposalStatus, RiskLevel
from policy.models import Proposal


class NonEmptyChoiceField(forms.ChoiceField):
    """A ``ChoiceField`` where a present empty value is invalid (absent stays allowed)."""

    def clean(self, value):
        if value == "":  # the widget gives None when the parameter is absent
            raise forms.ValidationError(
                "An empty value is not one of the available choices; leave the parameter out "
                "to match any.", code="invalid_choice")
        return super().clean(value)


class StrictChoiceFilter(django_filters.ChoiceFilter):
    """``ChoiceFilter`` that refuses ``?name=`` with 400 instead of ignoring it."""

    field_class = NonEmptyChoiceField


class ProposalFilterSet(django_filters.FilterSet):
    """``?status=``, ``?decision=``, ``?risk_level=`` (enums, 400 outside them) and
    ``?action=`` (an exact action name)."""

    status = StrictChoiceFilter(choices=ProposalStatus.choices)
    decision = StrictChoiceFilter(choices=Decision.choices)
    risk_level = StrictChoiceFilter(choices=RiskLevel.choices)

    class Meta:
        model = Proposal
        fields = ["status", "decision", "risk_level", "action"]
