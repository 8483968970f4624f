from django import forms


class ReasonForm(forms.Form):
    """The reason a supervisor gives to reject or roll back (required, 3..2000 characters)."""

    reason = forms.CharField(
        min_length=3, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )
