"""Query filters that refuse what they do not understand (every app's filtersets use them).

django-filter's ``ChoiceFilter`` treats ``?decision=`` (present but empty) as "no filter", and
its ``BooleanFilter`` ignores a value it cannot read, so a request outside the OpenAPI enum
would be answered 200 with every row. Here an empty or unknown value is a 400; an absent
parameter still means "any".
"""

from __future__ import annotations

import django_filters
from django import forms


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


class StrictBooleanFilter(StrictChoiceFilter):
    """``?name=true`` / ``?name=false`` only (400 otherwise), applied as ``lookup_expr``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["choices"] = [("true", "true"), ("false", "false")]
        super().__init__(*args, **kwargs)

    def filter(self, qs, value):
        if value in ("", None):
            return qs
        return super().filter(qs, value == "true")
