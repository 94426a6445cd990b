from datetime import timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import forms
from django.utils import timezone

from checklists.models import ChecklistTemplate
from releasecenter.models import Environment
from releasecenter.validation import MomentFormField

from .models import EnvironmentPolicy, Release, ReleaseTarget, Signoff, TimeWindow


class ReleaseForm(forms.ModelForm):
    environments = forms.ModelMultipleChoiceField(
        queryset=Environment.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Leave empty for all of the project's environments.",
    )

    class Meta:
        model = Release
        fields = ["version", "commit_sha", "notes", "planned_start"]
        field_classes = {"planned_start": MomentFormField}
        widgets = {
            "planned_start": forms.DateTimeInput(attrs={"type": "datetime-local"}),
            "notes": forms.Textarea(attrs={"rows": 4}),
        }
        help_texts = {"notes": "Markdown. HTML in it is shown as text."}

    def __init__(self, *args, project=None, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        super().__init__(*args, **kwargs)
        if project is not None:
            self.fields["environments"].queryset = project.environments.all()

    def validate_unique(self) -> None:
        pass  # the service answers a taken version


class ReleaseEditForm(forms.ModelForm):
    class Meta:
        model = Release
        fields = ["version", "commit_sha", "notes", "planned_start"]
        field_classes = {"planned_start": MomentFormField}
        widgets = {
            "planned_start": forms.DateTimeInput(attrs={"type": "datetime-local"}),
            "notes": forms.Textarea(attrs={"rows": 4}),
        }
        help_texts = {"notes": "Markdown. HTML in it is shown as text."}

    def validate_unique(self) -> None:
        pass


class ReleaseFilterForm(forms.Form):
    environment = forms.CharField(required=False)
    status = forms.ChoiceField(
        required=False,
        choices=[("", "Any status"), *ReleaseTarget.Status.choices],
        widget=forms.Select(attrs={"aria-label": "Status"}),
    )


class SignoffForm(forms.Form):
    environment = forms.CharField()
    role = forms.CharField(max_length=80)
    decision = forms.ChoiceField(choices=Signoff.Decision.choices)
    comment = forms.CharField(required=False, max_length=2000)


class RiskAcceptanceForm(forms.Form):
    environment = forms.CharField()
    item_key = forms.CharField(max_length=40)
    reason = forms.CharField(min_length=10, max_length=2000)
    # Read on the server's wall clock (TIME_ZONE); the page's field says which zone that is.
    expires_at = MomentFormField(
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        initial=lambda: (timezone.now() + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M"),
    )


class AcknowledgeForm(forms.Form):
    environment = forms.CharField()
    item_key = forms.CharField(max_length=40)


class FollowUpForm(forms.Form):
    resolution = forms.CharField(max_length=2000)


class PolicyForm(forms.ModelForm):
    min_notice_hours = forms.FloatField(
        required=False,
        min_value=0,
        max_value=24 * 60,
        help_text="Minimum hours between approval and the planned start (empty: none).",
    )
    signoff_roles = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="One role per line, with its quorum after a colon: 'Code review: 2'.",
    )

    class Meta:
        model = EnvironmentPolicy
        fields = [
            "checklist_templates",
            "require_previous_verified",
            "block_on_incidents",
            "auto_rollback",
        ]
        widgets = {"checklist_templates": forms.CheckboxSelectMultiple}

    def __init__(self, *args, project=None, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.fields["checklist_templates"].queryset = ChecklistTemplate.objects.filter(
            project=project
        ).order_by("name")

    def clean_signoff_roles(self) -> list[tuple[str, int]]:
        from django.core.exceptions import ValidationError

        from .services import clean_signoff_requirements

        rows: list[tuple[str, int]] = []
        for number, line in enumerate(self.cleaned_data["signoff_roles"].splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            role, _, quorum = line.rpartition(":") if ":" in line else (line, "", "1")
            try:
                rows.append((role.strip(), int(quorum.strip() or 1)))
            except ValueError as exc:
                raise forms.ValidationError(
                    f"Line {number}: the quorum after ':' must be a whole number."
                ) from exc
            try:
                # The service's own rules, checked line by line so the message can say where.
                clean_signoff_requirements(rows)
            except ValidationError as exc:
                raise forms.ValidationError(f"Line {number}: {' '.join(exc.messages)}") from exc
        return rows


class RequesterQuorumForm(forms.Form):
    requester_counts_for_quorum = forms.BooleanField(
        required=False,
        label="The person who requests a deployment counts towards its sign-off quorum",
        help_text="Project-wide: applies to every environment of the project. Off by default; "
        "small teams may turn it on.",
    )


class TimeWindowForm(forms.ModelForm):
    """A weekly window (days and times), or a dated one (two date-times). Both are read on the
    wall clock of the window's time zone, which the page says next to every time."""

    starts_at = forms.DateTimeField(
        required=False,
        label="Or, once: starts (in the time zone below)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="A one-off window, e.g. a holiday freeze; leave the weekly fields empty.",
    )
    ends_at = forms.DateTimeField(
        required=False,
        label="Ends (in the time zone below)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )

    class Meta:
        model = TimeWindow
        fields = [
            "kind",
            "label",
            "start_weekday",
            "start_time",
            "end_weekday",
            "end_time",
            "starts_at",
            "ends_at",
            "timezone",
        ]
        widgets = {
            "start_time": forms.TimeInput(attrs={"type": "time"}),
            "end_time": forms.TimeInput(attrs={"type": "time"}),
        }
        labels = {"timezone": "Time zone (IANA, e.g. Europe/Berlin)"}

    def clean(self) -> dict:
        data = super().clean()
        try:
            zone = ZoneInfo(data.get("timezone") or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            self.add_error("timezone", f"Unknown time zone '{data.get('timezone')}'.")
            return data
        # The form field read the wall-clock time in the server's zone; it is meant in the
        # window's own zone.
        for name in ("starts_at", "ends_at"):
            value = data.get(name)
            if value is not None:
                wall = timezone.make_naive(value) if timezone.is_aware(value) else value
                data[name] = wall.replace(tzinfo=zone)
        return data
