"""Extension point for `generate_benchmark_data`: apps register a step that adds their rows."""

from collections.abc import Callable

_steps: list[Callable[[list], None]] = []


def register(step: Callable[[list], None]) -> None:
    if step not in _steps:
        _steps.append(step)


def steps() -> list[Callable[[list], None]]:
    return list(_steps)
