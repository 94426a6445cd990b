from django import forms

from .models import Environment, Membership, Project, Service


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["name", "slug"]

    def validate_unique(self) -> None:
        # The service answers a taken slug as a conflict with a clear message.
        pass


class EnvironmentForm(forms.ModelForm):
    base_url = forms.URLField(required=False, assume_scheme="https")

    class Meta:
        model = Environment
        fields = ["name", "kind", "order", "protected", "base_url"]

    def validate_unique(self) -> None:
        pass


class ServiceForm(forms.ModelForm):
    class Meta:
        model = Service
        fields = ["name", "tier", "health_path"]

    def validate_unique(self) -> None:
        pass


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.ENGINEER)
    signoff_capacities = forms.CharField(
        required=False,
        help_text="Comma-separated sign-off roles, e.g. Backend Engineer, Security Review",
    )

    def clean_signoff_capacities(self) -> list[str]:
        raw = self.cleaned_data.get("signoff_capacities", "")
        return [part.strip() for part in raw.split(",") if part.strip()]


class AnnouncementForm(forms.Form):
    message = forms.CharField(max_length=500, widget=forms.TextInput)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=80, help_text="What uses it, e.g. 'GitHub Actions deploy'.")
