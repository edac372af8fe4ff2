"""The target registry: profiles are data, looked up by name (no if-chains)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ArtifactSpec:
    """One artifact a target ships: file, format, precision and how to run it."""

    filename: str
    format: str  # "onnx" | "openvino" | "ort"
    precision: str  # "fp32" | "fp16" | "int8"
    engine: str  # "onnxruntime" | "openvino"
    providers: tuple[str, ...] = ()  # ONNX Runtime execution providers, in order of preference
    device: str = "CPU"  # OpenVINO device
    # converter options (quantization etc.); a tuple value lists variants to build and measure,
    # the fastest one that passes the clinical gate is kept
    options: dict[str, Any] = field(default_factory=dict)
    # ONNX Runtime provider options, by provider; relative paths are relative to the bundle
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.format}-{self.precision}"


@dataclass(frozen=True)
class TargetProfile:
    """What to build for one kind of hardware and how the runtime should run it there."""

    name: str
    description: str
    artifacts: tuple[ArtifactSpec, ...]
    preprocessing_backend: str  # "gpu" (CUDA when present) | "cpu" (vectorised numpy/OpenCV)
    sensitivity: float = 0.98  # the threshold is chosen on validation for this sensitivity
    default_artifact: str = "fastest"  # a filename, or "fastest": chosen by measured speed at build
    notes: str = ""

    def artifact(self, filename: str) -> ArtifactSpec:
        for spec in self.artifacts:
            if spec.filename == filename:
                return spec
        raise KeyError(f"target {self.name!r} has no artifact {filename!r}; "
                       f"it has {[a.filename for a in self.artifacts]}")


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
