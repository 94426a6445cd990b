"""Panels that other apps contribute to the project overview, without the core importing them.

An app registers a provider in its AppConfig.ready():

    overview.register("deployments", provider)

where provider(project, environments) returns {environment_id: {key: value}}; the overview
template reads those keys (``deployed``, ``last_deployment``, ``health``) per environment and
shows an honest empty state where no provider says anything.
"""

from collections.abc import Callable
from typing import Any

Provider = Callable[[Any, list], dict[int, dict[str, Any]]]
_providers: dict[str, Provider] = {}


def register(name: str, provider: Provider) -> None:
    _providers[name] = provider


def panels(project, environments: list) -> dict[int, dict[str, Any]]:  # noqa: ANN001
    merged: dict[int, dict[str, Any]] = {env.pk: {} for env in environments}
    for provider in _providers.values():
        for env_id, values in provider(project, environments).items():
            merged.setdefault(env_id, {}).update(values)
    return merged
