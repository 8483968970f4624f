"""Forms of the simulation app."""

from django import forms


class NormalPeriodForm(forms.Form):
    """A declared normal-operation period to re-fit a what-if model on (sensor time)."""

    start = forms.DateTimeField(help_text="First reading of normal operation (YYYY-MM-DD HH:MM:SS, "
                                          "in the site's time zone, UTC).")
    end = forms.DateTimeField(help_text="Last reading of normal operation.")
    reason = forms.CharField(max_length=500, required=False,
                             help_text="Why this period is normal (kept in the audit trail).")

    def clean(self) -> dict:
        data = super().clean()
        if data.get("start") and data.get("end") and not data["start"] < data["end"]:
            raise forms.ValidationError("The period must end after it starts.")
        return data
