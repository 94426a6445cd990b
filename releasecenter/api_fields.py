"""Fields shared by the apps' API serializers."""

from __future__ import annotations

from rest_framework import serializers

from .validation import validate_moment


class MomentField(serializers.DateTimeField):
    """An API date and time, within the range of validate_moment."""

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        kwargs["validators"] = [*kwargs.get("validators", ()), validate_moment]
        super().__init__(**kwargs)
