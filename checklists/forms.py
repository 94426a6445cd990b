"""Forms check shapes; services check meaning. Each form maps to one service call."""

from __future__ import annotations

import json
from decimal import Decimal
from zoneinfo import available_timezones

from django import forms
from django.core.exceptions import ValidationError
from markdown_it import MarkdownIt

from releasecenter.validation import MomentFormField, load_json

from .lib.markdown_import import MAX_RUNBOOK_BYTES, format_due_offset
from .models import ChecklistTemplate, RecurringSchedule, Severity

_FENCES = MarkdownIt("commonmark")


def commands_to_text(commands: list[dict[str, str]]) -> str:
    """Commands as fenced blocks, the way people write them in a runbook."""
    blocks = []
    for command in commands or []:
        code = command.get("code", "")
        fence = "````" if "```" in code else "```"
        blocks.append(f"{fence}{command.get('language', '')}\n{code}\n{fence}")
    return "\n\n".join(blocks)


def text_to_commands(text: str) -> list[dict[str, str]]:
    text = (text or "").replace("\r\n", "\n")
    commands = []
    stray = False
    for token in _FENCES.parse(text):
        if token.type == "fence":
            info = token.info.strip()
            commands.append(
                {
                    "language": info.split(maxsplit=1)[0] if info else "",
                    "code": token.content.removesuffix("\n"),
                }
            )
        elif token.level == 0 and token.nesting != -1 and token.type != "fence":
            stray = True
    if stray:
        raise ValidationError("Put each command in a fenced block: ```bash … ```.")
    return commands


class ImportForm(forms.Form):
    file = forms.FileField(required=False, help_text="A Markdown file, up to 1 MiB.")
    markdown = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 12, "placeholder": "# Runbook\n\n- [ ] First step"}),
        label="Or paste Markdown",
    )
    name = forms.CharField(
        required=False, max_length=200, help_text="Defaults to the runbook's title."
    )
    kind = forms.ChoiceField(
        required=False,
        choices=[("", "Guess from the name"), *ChecklistTemplate.Kind.choices],
    )
    # The uploaded file's name, carried from the preview to the save step with its text.
    filename = forms.CharField(required=False, max_length=255, widget=forms.HiddenInput)

    def clean(self):  # noqa: ANN201
        data = super().clean()
        upload = data.get("file")
        if upload is not None:
            if upload.size > MAX_RUNBOOK_BYTES:
                raise ValidationError(
                    f"The file is {upload.size:,} bytes; the limit is {MAX_RUNBOOK_BYTES:,} "
                    "bytes (1 MiB)."
                )
            data["source"] = upload.read()
            data["filename"] = upload.name
        elif data.get("markdown", "").strip():
            data["source"] = data["markdown"]
            data["filename"] = data.get("filename") or None
        else:
            raise ValidationError("Choose a Markdown file or paste the runbook's text.")
        return data


class TemplateForm(forms.ModelForm):
    class Meta:
        model = ChecklistTemplate
        fields = ["name", "kind"]

    def validate_unique(self) -> None:
        # The service answers a taken name as a conflict with a clear message.
        pass


class SectionForm(forms.Form):
    title = forms.CharField(max_length=500)
    notes = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="Markdown: prose, tables and lists shown above the section's items.",
    )


class ItemForm(forms.Form):
    text = forms.CharField(max_length=5000, widget=forms.TextInput)
    details = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}))
    severity = forms.ChoiceField(choices=Severity.choices, initial=Severity.NONE)
    owner_role = forms.CharField(required=False, max_length=80, label="Owner role")
    due_offset = forms.CharField(
        required=False,
        max_length=40,
        label="Due",
        help_text="Relative to the planned start: -2h, +15m, 0, T-30 minutes. Empty: no due time.",
    )
    evidence_required = forms.BooleanField(
        required=False, help_text="The item cannot be ticked until a file or link is attached."
    )
    pre_checked = forms.BooleanField(
        required=False,
        label="Pre-checked",
        help_text="Starts done in a new run; an item that also requires evidence starts open, "
        "since a new run has no evidence yet.",
    )
    commands = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Fenced blocks: ```bash … ```",
    )
    automation = forms.CharField(
        required=False,
        max_length=2000,
        help_text='An automated check as JSON, e.g. {"kind": "check", "check_id": 12}.',
    )
    BUILD_CHOICES = [
        ("", "By severity: a gate reopens, a plain step keeps its tick"),
        ("reopens", "Reopens: the tick is proof about one build"),
        ("keeps", "Keeps its tick: independent of the build"),
    ]
    on_new_commit = forms.ChoiceField(
        required=False,
        choices=BUILD_CHOICES,
        label="When the release's commit changes",
    )

    @classmethod
    def initial_for(cls, item) -> dict:  # noqa: ANN001
        return {
            "text": item.text,
            "details": item.details,
            "severity": item.severity,
            "owner_role": item.owner_role,
            "due_offset": ""
            if item.due_offset_minutes is None
            else format_due_offset(item.due_offset_minutes),
            "evidence_required": item.evidence_required,
            "pre_checked": item.pre_checked,
            "commands": commands_to_text(item.commands),
            "automation": json.dumps(item.automation) if item.automation else "",
            "on_new_commit": {None: "", True: "keeps", False: "reopens"}[item.independent_of_build],
        }

    def clean_commands(self) -> list[dict[str, str]]:
        return text_to_commands(self.cleaned_data.get("commands", ""))

    def clean_automation(self):  # noqa: ANN201
        raw = self.cleaned_data.get("automation", "").strip()
        if not raw:
            return None
        try:
            return load_json(raw)
        except ValueError as exc:
            raise ValidationError("Write the automation as JSON.") from exc

    def service_fields(self) -> dict:
        data = dict(self.cleaned_data)
        data["due_offset_minutes"] = data.pop("due_offset")
        data["independent_of_build"] = {"": None, "keeps": True, "reopens": False}[
            data.pop("on_new_commit", "") or ""
        ]
        return data


class RunForm(forms.Form):
    title = forms.CharField(required=False, max_length=300, help_text="Defaults to the template.")
    environment = forms.ModelChoiceField(queryset=None, required=False, empty_label="None")
    planned_start = MomentFormField(
        required=False,
        label="Planned start (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Due times of the items count from it.",
    )

    def __init__(self, *args, project, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.fields["environment"].queryset = project.environments.all()


WEEKDAYS = [
    (0, "Monday"),
    (1, "Tuesday"),
    (2, "Wednesday"),
    (3, "Thursday"),
    (4, "Friday"),
    (5, "Saturday"),
    (6, "Sunday"),
]


class ScheduleForm(forms.Form):
    environment = forms.ModelChoiceField(queryset=None)
    frequency = forms.ChoiceField(choices=RecurringSchedule.Frequency.choices)
    time_of_day = forms.TimeField(widget=forms.TimeInput(attrs={"type": "time"}))
    timezone_name = forms.CharField(initial="UTC", max_length=64, label="Time zone")
    weekday = forms.TypedChoiceField(
        choices=[("", "—"), *WEEKDAYS], coerce=int, required=False, empty_value=None
    )
    day_of_month = forms.IntegerField(min_value=1, max_value=28, required=False)
    # Decimal bounds: a float 0.1 is a hair above Decimal("0.1"), so the form's own minimum
    # was refused.
    deadline_hours = forms.DecimalField(
        min_value=Decimal("0.1"),
        max_value=Decimal(744),
        initial=8,
        decimal_places=2,
        label="Deadline (hours)",
    )

    def __init__(self, *args, project, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.fields["environment"].queryset = project.environments.all()

    def clean_timezone_name(self) -> str:
        name = self.cleaned_data["timezone_name"].strip()
        if name not in available_timezones():
            raise ValidationError(f"Unknown time zone '{name}'; e.g. Europe/Berlin or UTC.")
        return name

    def service_fields(self) -> dict:
        data = dict(self.cleaned_data)
        data["deadline_minutes"] = int(data.pop("deadline_hours") * 60)
        return data

    # The service names the deadline in minutes; the person filled in hours.
    SERVICE_FIELD_LABELS = {"deadline_minutes": "deadline_hours", "timezone": "timezone_name"}

    def error_text(self, exc: ValidationError | None = None) -> str:
        """The form's errors (or a service's), each under the label the person saw, never the
        raw field name."""
        errors = dict(self.errors) if exc is None else {}
        if exc is not None:
            if hasattr(exc, "error_dict"):
                errors = {
                    self.SERVICE_FIELD_LABELS.get(name, name): messages
                    for name, messages in exc.message_dict.items()
                }
            else:
                errors = {"__all__": exc.messages}
        parts = []
        for name, messages in errors.items():
            field = self.fields.get(name)
            label = (field.label or name.replace("_", " ").capitalize()) if field else ""
            text = " ".join(str(m) for m in messages)
            parts.append(f"{label}: {text}" if label else text)
        return "; ".join(parts)


class NaForm(forms.Form):
    reason = forms.CharField(max_length=500)


class NoteForm(forms.Form):
    note = forms.CharField(required=False, max_length=2000, widget=forms.Textarea)


class LinkForm(forms.Form):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    name = forms.CharField(required=False, max_length=200)
