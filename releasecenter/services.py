"""The verbs that change core state. Views, the API, commands and tasks all call these.

Each one validates first (raising ValidationError with a message a user can act on), then
mutates inside a transaction, then records an event; nothing is half-written on bad input.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import events
from .access import require_role
from .models import ApiToken, Environment, Membership, Project, Service


class Conflict(Exception):
    """The request is well-formed but clashes with existing state (answered as 409)."""


def _snapshot(obj, fields: list[str]) -> dict[str, Any]:  # noqa: ANN001
    return {f: getattr(obj, f) for f in fields}


def _save_new(obj, conflict_message: str) -> None:  # noqa: ANN001
    obj.full_clean(validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():
            obj.save()
    except IntegrityError as exc:
        raise Conflict(conflict_message) from exc


# --- Projects ---------------------------------------------------------------------------------


@transaction.atomic
def create_project(actor, *, slug: str, name: str) -> Project:  # noqa: ANN001
    """Create a project; its creator becomes its admin."""
    project = Project(slug=slug, name=name)
    _save_new(project, f"A project with the slug '{slug}' exists.")
    Membership.objects.create(user=actor, project=project, role=Membership.Role.ADMIN)
    events.publish(
        project.topic,
        "project.created",
        project=project,
        actor=actor,
        obj=project,
        after={"slug": slug, "name": name},
    )
    return project


ENV_FIELDS = ["name", "kind", "order", "protected", "base_url"]


@transaction.atomic
def create_environment(actor, membership: Membership, **fields: Any) -> Environment:  # noqa: ANN001
    require_role(membership, Membership.Role.ADMIN)
    project = membership.project
    fields = {k: v for k, v in fields.items() if k in ENV_FIELDS}
    if "order" not in fields:
        last = project.environments.order_by("-order").values_list("order", flat=True).first()
        fields["order"] = (last or 0) + 10
    env = Environment(project=project, **fields)
    _save_new(env, f"The environment '{fields.get('name')}' exists in this project.")
    events.publish(
        project.topic,
        "environment.created",
        project=project,
        actor=actor,
        obj=env,
        after=_snapshot(env, ENV_FIELDS),
    )
    return env


@transaction.atomic
def update_environment(
    actor, membership: Membership, env: Environment, **changes: Any
) -> Environment:  # noqa: ANN001
    require_role(membership, Membership.Role.ADMIN)
    env = Environment.objects.select_for_update().get(pk=env.pk)
    before = _snapshot(env, ENV_FIELDS)
    for key, value in changes.items():
        if key in ENV_FIELDS:
            setattr(env, key, value)
    env.full_clean(validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():
            env.save()
    except IntegrityError as exc:
        raise Conflict(f"The environment '{env.name}' exists in this project.") from exc
    events.publish(
        env.project.topic,
        "environment.updated",
        project=env.project_id,
        actor=actor,
        obj=env,
        before=before,
        after=_snapshot(env, ENV_FIELDS),
    )
    return env


SERVICE_FIELDS = ["name", "tier", "health_path"]


@transaction.atomic
def create_service(actor, membership: Membership, **fields: Any) -> Service:  # noqa: ANN001
    require_role(membership, Membership.Role.ADMIN)
    project = membership.project
    service = Service(project=project, **{k: v for k, v in fields.items() if k in SERVICE_FIELDS})
    _save_new(service, f"The service '{fields.get('name')}' exists in this project.")
    events.publish(
        project.topic,
        "service.created",
        project=project,
        actor=actor,
        obj=service,
        after=_snapshot(service, SERVICE_FIELDS),
    )
    return service


# --- Members ----------------------------------------------------------------------------------


def _clean_capacities(capacities: Any) -> list[str]:
    if capacities is None:
        return []
    if not isinstance(capacities, list) or not all(isinstance(c, str) for c in capacities):
        raise ValidationError({"signoff_capacities": "Give a list of sign-off role names."})
    cleaned = []
    for cap in capacities:
        cap = " ".join(cap.split())
        if not cap or len(cap) > 80:
            raise ValidationError({"signoff_capacities": "Role names are 1 to 80 characters."})
        if cap not in cleaned:
            cleaned.append(cap)
    return cleaned


@transaction.atomic
def add_member(
    actor,  # noqa: ANN001
    membership: Membership,
    *,
    username: str,
    role: str = Membership.Role.ENGINEER,
    signoff_capacities: list[str] | None = None,
) -> Membership:
    require_role(membership, Membership.Role.ADMIN)
    if role not in Membership.Role.values:
        raise ValidationError({"role": f"Choose one of: {', '.join(Membership.Role.values)}."})
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise ValidationError({"username": f"No active user '{username}'."})
    new = Membership(
        user=user,
        project=membership.project,
        role=role,
        signoff_capacities=_clean_capacities(signoff_capacities),
    )
    _save_new(new, f"{username} is already a member of this project.")
    events.publish(
        membership.project.topic,
        "member.added",
        project=membership.project_id,
        actor=actor,
        obj=new,
        after={"username": username, "role": role, "signoff_capacities": new.signoff_capacities},
    )
    return new


@transaction.atomic
def update_member(
    actor,  # noqa: ANN001
    membership: Membership,
    target: Membership,
    *,
    role: str | None = None,
    signoff_capacities: list[str] | None = None,
) -> Membership:
    require_role(membership, Membership.Role.ADMIN)
    target = Membership.objects.select_for_update().get(pk=target.pk, project=membership.project)
    before = {"role": target.role, "signoff_capacities": target.signoff_capacities}
    if role is not None:
        if role not in Membership.Role.values:
            raise ValidationError({"role": f"Choose one of: {', '.join(Membership.Role.values)}."})
        if target.role == Membership.Role.ADMIN and role != Membership.Role.ADMIN:
            _ensure_another_admin(target)
        target.role = role
    if signoff_capacities is not None:
        target.signoff_capacities = _clean_capacities(signoff_capacities)
    target.save(update_fields=["role", "signoff_capacities"])
    events.publish(
        membership.project.topic,
        "member.updated",
        project=membership.project_id,
        actor=actor,
        obj=target,
        before=before,
        after={"role": target.role, "signoff_capacities": target.signoff_capacities},
    )
    return target


def _ensure_another_admin(target: Membership) -> None:
    others = Membership.objects.filter(project_id=target.project_id, role=Membership.Role.ADMIN)
    if not others.exclude(pk=target.pk).exists():
        raise ValidationError("A project keeps at least one admin.")


@transaction.atomic
def remove_member(actor, membership: Membership, target: Membership) -> None:  # noqa: ANN001
    require_role(membership, Membership.Role.ADMIN)
    target = Membership.objects.select_for_update().get(pk=target.pk, project=membership.project)
    if target.role == Membership.Role.ADMIN:
        _ensure_another_admin(target)
    before = {"username": target.user.username, "role": target.role}
    target_id = target.pk
    target.delete()
    events.publish(
        membership.project.topic,
        "member.removed",
        project=membership.project_id,
        actor=actor,
        before=before,
        data={"membership_id": target_id},
    )


# --- Announcements ----------------------------------------------------------------------------


def post_announcement(actor, membership: Membership, message: str) -> None:  # noqa: ANN001
    """Queue a project announcement; a worker fans it out to everyone watching the project."""
    require_role(membership, Membership.Role.LEAD)
    message = message.strip()
    if not message or len(message) > 500:
        raise ValidationError({"message": "An announcement is 1 to 500 characters."})
    from .tasks import announce

    project_id, actor_id = membership.project_id, actor.pk
    transaction.on_commit(lambda: announce.delay(project_id, message, actor_id))


def deliver_announcement(project_id: int, message: str, actor_id: int | None) -> None:
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    events.publish(
        f"project:{project_id}",
        "announcement.posted",
        project=project_id,
        actor=actor,
        data={"message": message, "by": actor.username if actor else None},
    )


# --- API tokens -------------------------------------------------------------------------------


def create_api_token(user, name: str) -> tuple[ApiToken, str]:  # noqa: ANN001
    """Create a token; the raw secret is returned once and never stored."""
    name = " ".join((name or "").split())
    if not name or len(name) > 80:
        raise ValidationError({"name": "A token name is 1 to 80 characters."})
    raw = ApiToken.PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user, name=name, hint=raw[:8], token_hash=ApiToken.hash(raw)
        )
        events.publish(
            f"user:{user.pk}",
            "api_token.created",
            actor=user,
            obj=token,
            after={"name": name, "hint": token.hint},
        )
    return token, raw


@transaction.atomic
def revoke_api_token(actor, token: ApiToken) -> ApiToken:  # noqa: ANN001
    if token.user_id != actor.pk:
        raise ValidationError("You can revoke only your own tokens.")
    updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    token.refresh_from_db()
    if updated:
        events.publish(
            f"user:{actor.pk}",
            "api_token.revoked",
            actor=actor,
            obj=token,
            before={"active": True},
            after={"active": False},
        )
    return token
