"""The target registry: profiles are data, looked up by name (no if-chains)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TargetProfile:
    """What to build for one kind of hardware, by format key (see runtime/formats.py).

    The default artifact is chosen by a fixed rule, never by a timing: the first format of
    ``default_preference`` that was built and passed the clinical gate. At least one format of
    the preference is not optional, so a bundle that is written always has a default.
    """

    name: str
    description: str
    formats: tuple[str, ...]  # format keys to build, in order (a source before what it feeds)
    preprocessing_backend: str  # "gpu" (CUDA when present) | "cpu" (vectorised numpy/OpenCV)
    default_preference: tuple[str, ...] = ()  # empty: the order of ``formats``
    sensitivity: float = 0.98  # the threshold is chosen on validation for this sensitivity
    #: formats whose failure (conversion, or the clinical gate at every retry level) leaves the
    #: bundle without them, recorded in the manifest's ``skipped``; the others fail the build
    optional: tuple[str, ...] = ()
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # converter options by format
    notes: str = ""

    @property
    def preference(self) -> tuple[str, ...]:
        return self.default_preference or self.formats

    def options_for(self, key: str) -> dict[str, Any]:
        return dict(self.options.get(key, {}))


class UnknownTargetError(KeyError):
    """A target name that is not registered (the message suggests the closest one)."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


_REGISTRY: dict[str, TargetProfile] = {}


def register(profile: TargetProfile) -> TargetProfile:
    """Add a profile; names are unique."""
    if profile.name in _REGISTRY:
        raise ValueError(f"target {profile.name!r} is already registered")
    _REGISTRY[profile.name] = profile
    return profile


def unregister(name: str) -> None:
    """Remove a profile (tests register throw-away profiles)."""
    _REGISTRY.pop(name, None)


def target_names() -> list[str]:
    return list(_REGISTRY)


def all_targets() -> list[TargetProfile]:
    return list(_REGISTRY.values())


def get_target(name: str) -> TargetProfile:
    """The profile called ``name``, or an error with a "did you mean"."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name.strip().lower(), list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownTargetError(
            f"unknown target {name!r}.{hint} Known targets: {', '.join(_REGISTRY)}") from None
