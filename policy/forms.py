from django import forms


class RejectForm(forms.Form):
    reason = forms.CharField(
        min_length=3, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )
