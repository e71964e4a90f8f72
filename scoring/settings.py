"""Settings of the formula's terms and the rescoring strategies: each field declares its limits once, where it
is declared, and the registries check every field when a config builds an instance, so a bad value is refused
with the same message shape (`half_life_days must be > 0`) whichever term or strategy it belongs to."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Limits:
    """What a setting's value may be: above a bound, within [at_least, at_most], or one of some names."""

    above: float | None = None
    at_least: float | None = None
    at_most: float | None = None
    one_of: tuple[str, ...] = ()

    def problem(self, name: str, value: Any) -> str | None:
        if self.one_of and value not in self.one_of:
            return f"{name} must be one of {', '.join(self.one_of)}"
        if self.above is not None and not value > self.above:
            return f"{name} must be > {self.above:g}"
        if self.at_least is not None and self.at_most is not None:
            inside = self.at_least <= value <= self.at_most
            return None if inside else f"{name} must be in [{self.at_least:g}, {self.at_most:g}]"
        if self.at_least is not None and not value >= self.at_least:
            return f"{name} must be >= {self.at_least:g}"
        return None


def setting(default: Any, **limits: Any) -> Any:
    """A dataclass field with `default` and the Limits its values must keep."""
    return field(default=default, metadata={"limits": Limits(**limits)})


def check_settings(instance: Any) -> None:
    """Raises ValueError naming the first field of `instance` outside its Limits."""
    for declared in fields(instance):
        limits = declared.metadata.get("limits")
        problem = limits and limits.problem(declared.name, getattr(instance, declared.name))
        if problem:
            raise ValueError(problem)
