"""Checkpoints without pickle: safetensors weights whose metadata declares the model.

The metadata names the architecture and its config, the input, the classes and the
preprocessing contract, so that any registered architecture, not only the reference model,
can be rebuilt, exported and checked without extra flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from converters.architectures import build_model
from converters.findings import Findings, findings_of
from runtime.bundle.hashing import sha256_file
from runtime.contract.manifest import Preprocessing

FORMAT = "cxr-kit-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not match the architecture it names."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model and feed it the right pixels."""

    architecture: str
    config: dict = field(default_factory=dict)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    classes: tuple[str, ...] = ("NORMAL", "PNEUMONIA")
    positive_class: str = "PNEUMONIA"
    name: str = "pneumonia-cnn"
    dataset: str = "pneumoniamnist"  # what it was trained on: "pneumoniamnist" or "kermany"
    #: every finding in order, the first being ``positive_class`` (empty: that one alone; kit
    #: checkpoints have one finding and do not store this)
    findings: tuple[str, ...] = ()
    #: "multiclass" (softmax rows) or "multilabel" (one sigmoid per label)
    task: str = "multiclass"
    #: each finding's validation sensitivity target (None: the target profile's, for every one)
    sensitivity: dict[str, float] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.preprocessing.channels, *self.preprocessing.shape)

    @property
    def positive_index(self) -> int:
        return self.classes.index(self.positive_class)

    @property
    def finding_labels(self) -> tuple[str, ...]:
        """Every finding, in order (the first is :attr:`positive_class`)."""
        return self.findings or (self.positive_class,)

    @property
    def scored_findings(self) -> Findings:
        """The findings as the build scores them, each against the rest."""
        return findings_of(self.classes, self.finding_labels, self.task)

    def finding_sensitivity(self, default: float) -> tuple[float, ...]:
        """Each finding's validation sensitivity target: the spec's own, else ``default`` (the
        target profile's) for every finding."""
        given = self.sensitivity or {}
        return tuple(float(given.get(f, default)) for f in self.finding_labels)

    def to_metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "name": self.name, "architecture": self.architecture,
                "config": json.dumps(self.config, sort_keys=True),
                "preprocessing": json.dumps(self.preprocessing.as_dict(), sort_keys=True),
                "classes": json.dumps(list(self.classes)), "positive_class": self.positive_class,
                "dataset": self.dataset}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: Path) -> "ModelSpec":
        missing = [k for k in ("format", "architecture", "config", "preprocessing", "classes")
                   if k not in meta]
        if missing:
            raise CheckpointError(f"{source}: not a kit checkpoint (metadata lacks {missing}); "
                                  "see docs/building-bundles.md, 'Bringing your own checkpoint'")
        if meta["format"] != FORMAT:
            raise CheckpointError(f"{source}: checkpoint format {meta['format']!r}, expected {FORMAT!r}")
        try:
            classes = tuple(json.loads(meta["classes"]))
            return cls(architecture=meta["architecture"], config=json.loads(meta["config"]),
                       preprocessing=Preprocessing.from_dict(json.loads(meta["preprocessing"])),
                       classes=classes, positive_class=meta.get("positive_class", classes[-1]),
                       name=meta.get("name", meta["architecture"]),
                       dataset=meta.get("dataset", "pneumoniamnist"))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{source}: unreadable checkpoint metadata ({exc})") from exc


@dataclass
class LoadedCheckpoint:
    model: nn.Module
    spec: ModelSpec
    path: Path
    sha256: str
    #: why the model offers no scope features, in plain words (None: it offers them, or says
    #: nothing; the build then judges scope by the rules only)
    no_scope_features: str | None = None


def save_checkpoint(model: nn.Module, spec: ModelSpec, path: str | Path) -> Path:
    """Write weights + spec as one safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=spec.to_metadata())
    canonical_header(path)
    return path


def canonical_header(path: str | Path) -> bool:
    """Rewrite a safetensors file's JSON header with sorted keys (same length, same tensors).

    safetensors (0.8.0) writes the ``__metadata__`` keys in a different order in every process,
    so two saves of the same weights and metadata differ in bytes and sha256. Sorted, the file
    is a function of its content: a re-run of a deterministic training reproduces the shipped
    checkpoint byte for byte. Returns whether the file changed.
    """
    path = Path(path)
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > size:  # cannot happen for the same content written compactly
        raise CheckpointError(f"{path}: cannot sort its header in place ({len(text)} > {size})")
    canonical = raw[:8] + text.ljust(size, b" ") + raw[8 + size:]
    if canonical == raw:
        return False
    path.write_bytes(canonical)
    return True


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Rebuild the model a checkpoint declares and load its weights (strict, eval mode)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path}: corrupt or not a safetensors checkpoint ({exc})") from exc
    spec = ModelSpec.from_metadata(meta, path)
    try:
        model = build_model(spec.architecture, **spec.config)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot build architecture {spec.architecture!r} "
                              f"with config {spec.config}: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise CheckpointError(f"{path}: weights do not match architecture {spec.architecture!r} "
                              f"{spec.config}: {' '.join(first[:3])}") from exc
    model.eval()
    return LoadedCheckpoint(model=model, spec=spec, path=path, sha256=sha256_file(path))
