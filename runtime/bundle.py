"""Bundle loading: read ``manifest.json``, verify the chosen artifact, open it with its engine.

A bundle (``dist/<target>/``) is complete on its own; its manifest is the single source of truth
(see docs/ARCHITECTURE.md). Before an artifact is loaded, every file it is made of (an OpenVINO
``.xml`` and its ``.bin``) is checked against the manifest's ``bytes`` and ``sha256``; a bundle
that does not match is refused with a :class:`BundleError` and nothing is run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.engines import Engine, EngineError, create_engine
from runtime.hashing import sha256_file
from runtime.preprocess import Preprocessing

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SUPPORTED_SCHEMA = 1
_REQUIRED = ("schema_version", "target", "model", "preprocessing", "threshold",
             "default_artifact", "artifacts")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class BundleError(RuntimeError):
    """A bundle that is missing, incomplete, tampered with or cannot be run here."""


@dataclass
class Bundle:
    """A verified bundle with its chosen artifact open in an engine."""

    path: Path
    manifest: dict
    artifact: dict
    engine: Engine
    preprocessing: Preprocessing
    threshold: float
    classes: list[str]
    positive_class: str
    device: str  # "cpu" or "cuda": where the model runs
    notes: list[str] = field(default_factory=list)  # fallbacks and other things worth saying

    @property
    def positive_index(self) -> int:
        return self.classes.index(self.positive_class)

    @property
    def preprocessing_backend(self) -> str:
        return str(self.manifest.get("preprocessing_backend", "cpu"))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 -> (N,) probability of the positive class."""
        out = np.asarray(self.engine.run(batch), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(batch) or out.shape[1] != len(self.classes):
            raise EngineError(f"model returned shape {out.shape}, expected "
                              f"({len(batch)}, {len(self.classes)})")
        sums = out.sum(axis=1)
        if (out < -1e-4).any() or (out > 1 + 1e-4).any() or not np.allclose(sums, 1.0, atol=1e-2):
            # a bundle is meant to ship probabilities; accept logits rather than misreport them
            shifted = np.exp(out - out.max(axis=1, keepdims=True))
            out = shifted / shifted.sum(axis=1, keepdims=True)
        return out[:, self.positive_index]

    def describe(self) -> dict[str, Any]:
        """What ran, for summaries and logs."""
        return {"bundle": str(self.path), "target": self.manifest.get("target"),
                "artifact": self.artifact["path"], "sha256": self.artifact["sha256"],
                "format": self.artifact.get("format"), "precision": self.artifact.get("precision"),
                "engine": self.engine.name, "requested": list(self.engine.requested),
                "active": list(self.engine.active), "inference_precision": self.engine.precision,
                "fell_back": bool(self.engine.fell_back), "device": self.device,
                "threshold": self.threshold}


def read_manifest(path: str | Path) -> dict:
    """Parse and sanity-check ``path/manifest.json`` (no artifact is touched)."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle folder not found: {root} (build one with "
                          f"`python -m converters build --target cpu`)")
    manifest_path = root / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{root} is not a bundle: it has no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{manifest_path} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} is not a JSON object")
    missing = [key for key in _REQUIRED if key not in manifest]
    if missing:
        raise BundleError(f"{manifest_path} is incomplete: missing {', '.join(missing)}")
    if manifest["schema_version"] != SUPPORTED_SCHEMA:
        raise BundleError(f"{manifest_path} has schema_version {manifest['schema_version']}; "
                          f"this runtime reads version {SUPPORTED_SCHEMA}")
    if not isinstance(manifest["artifacts"], list) or not manifest["artifacts"]:
        raise BundleError(f"{manifest_path} lists no artifacts")
    return manifest


def choose_artifact(manifest: dict, artifact: str | None = None) -> dict:
    """The manifest entry for ``artifact`` (a file name or ``format-precision``), else the default."""
    entries = manifest["artifacts"]
    wanted = artifact or manifest["default_artifact"]
    wanted = Path(str(wanted)).name if artifact and "/" in str(artifact) else wanted
    for entry in entries:
        if entry.get("path") == wanted:
            return entry
    for entry in entries:  # "openvino-int8", "onnx-fp16"
        if f"{entry.get('format')}-{entry.get('precision')}" == wanted:
            return entry
    listed = ", ".join(str(e.get("path")) for e in entries)
    what = "artifact" if artifact else "default_artifact"
    raise BundleError(f"{what} {wanted!r} is not in the bundle; it has: {listed}")


def _safe_member(root: Path, relative: str) -> Path:
    candidate = (root / relative).resolve()
    if root.resolve() not in candidate.parents:
        raise BundleError(f"manifest names a file outside the bundle: {relative!r}")
    return candidate


def verify_artifact(root: str | Path, entry: dict) -> list[Path]:
    """Check bytes + sha256 of every file of ``entry``; return their paths (main file first)."""
    root = Path(root)
    parts = list(entry.get("files") or [])
    if not any(p.get("path") == entry.get("path") for p in parts):
        parts.insert(0, {"path": entry.get("path"), "sha256": entry.get("sha256"),
                         "bytes": entry.get("bytes")})
    paths = []
    for part in parts:
        name, expected, size = part.get("path"), part.get("sha256"), part.get("bytes")
        if not name or not expected:
            raise BundleError(f"manifest entry for {entry.get('path')!r} lacks a path or sha256: "
                              "refusing to load an unverifiable artifact")
        file = _safe_member(root, name)
        if not file.is_file():
            raise BundleError(f"bundle is incomplete: {name} is listed in the manifest but missing")
        actual_size = file.stat().st_size
        if size is not None and actual_size != int(size):
            raise BundleError(f"bundle file {name} is {actual_size} bytes, the manifest says {size}: "
                              "the bundle is incomplete or was modified; rebuild or re-copy it")
        digest = sha256_file(file)
        if digest != expected:
            raise BundleError(f"bundle file {name} failed its sha256 check (manifest {expected[:12]}…, "
                              f"file {digest[:12]}…): it was modified or corrupted; refusing to run it")
        paths.append(file)
    return paths


def _provider_options(root: Path, entry: dict) -> dict[str, dict]:
    """The manifest's provider options, with relative cache paths made bundle-relative."""
    options: dict[str, dict] = {}
    for provider, values in (entry.get("provider_options") or {}).items():
        fixed = dict(values)
        for key, value in values.items():
            if key.endswith("_path") and isinstance(value, str) and not Path(value).is_absolute():
                fixed[key] = str(root / value)
        options[provider] = fixed
    return options


def load_bundle(path: str | Path, artifact: str | None = None, device: str = "auto",
                cuda_ok: bool | None = None, threads: int | None = None) -> Bundle:
    """Read, verify and open a bundle.

    ``device``: "auto" runs with the manifest's providers where this machine can (CUDA only when
    it is really usable), "cpu" forces the CPU, "cuda" requires a working CUDA provider.
    ``cuda_ok`` overrides the CUDA probe (tests).
    """
    if device not in ("auto", "cpu", "cuda"):
        raise BundleError(f"unknown device {device!r}; expected auto, cpu or cuda")
    root = Path(path)
    manifest = read_manifest(root)
    entry = choose_artifact(manifest, artifact)
    verify_artifact(root, entry)
    try:
        spec = Preprocessing.from_dict(manifest["preprocessing"])
    except (TypeError, ValueError) as exc:
        raise BundleError(f"manifest preprocessing is invalid: {exc}") from exc
    model = manifest["model"]
    classes = list(model.get("classes") or [])
    positive = model.get("positive_class", classes[-1] if classes else None)
    if len(classes) < 2 or positive not in classes:
        raise BundleError(f"manifest model classes {classes} / positive class {positive!r} are invalid")
    shape = (model.get("input") or {}).get("shape")
    if shape and list(shape[-2:]) != [spec.size, spec.size]:
        raise BundleError(f"manifest input shape {shape} does not match preprocessing size {spec.size}")
    try:
        threshold = float(manifest["threshold"])
    except (TypeError, ValueError):
        raise BundleError(f"manifest threshold {manifest['threshold']!r} is not a number") from None

    notes: list[str] = []
    engine_name = entry.get("engine", "onnxruntime")
    file = _safe_member(root, entry["path"])
    run_on = "cpu"
    try:
        if engine_name == "onnxruntime":
            providers = list(entry.get("providers") or ["CPUExecutionProvider"])
            wants_gpu = any(p in GPU_PROVIDERS for p in providers)
            if device == "cuda" or (device == "auto" and wants_gpu):
                from runtime.gpu_preprocess import cuda_usable

                usable, why = (cuda_ok, "forced") if cuda_ok is not None else cuda_usable()
                if device == "cuda" and not usable:
                    raise BundleError(f"--device cuda asked for, but CUDA is not usable here: {why}")
                if device == "cuda" and not wants_gpu:
                    providers = ["CUDAExecutionProvider", *providers]
                if not usable:
                    providers = [p for p in providers if p not in GPU_PROVIDERS] or \
                        ["CPUExecutionProvider"]
                    notes.append(f"CUDA not usable here ({why}): running {entry['path']} on the CPU "
                                 "instead of the bundle's GPU providers")
                    log.warning("%s", notes[-1])
            elif device == "cpu":
                providers = [p for p in providers if p not in GPU_PROVIDERS] or \
                    ["CPUExecutionProvider"]
            engine = create_engine(file, "onnxruntime", providers=providers,
                                   provider_options=_provider_options(root, entry), threads=threads)
            run_on = "cuda" if engine.active[:1] and engine.active[0] in GPU_PROVIDERS else "cpu"
            if engine.fell_back:  # the engine has logged it loudly; keep it for the summary
                notes.append(f"ONNX Runtime FELL BACK: asked for {engine.requested}, "
                             f"running on {engine.active}")
        elif engine_name == "openvino":
            ov_device = entry.get("device", "CPU")
            if device == "cpu":
                ov_device = "CPU"
            elif device == "cuda":
                raise BundleError(f"{entry['path']} is an OpenVINO artifact; it cannot run on CUDA")
            hint = entry.get("precision_hint", "f32")
            engine = create_engine(file, "openvino", device=ov_device, precision_hint=hint,
                                   threads=threads)
            if hint and engine.precision != hint:  # the engine logs it too
                notes.append(f"OpenVINO runs {entry['path']} in {engine.precision}, not the "
                             f"{hint} asked for")
        else:
            raise BundleError(f"artifact {entry['path']} names unknown engine {engine_name!r}")
    except EngineError as exc:
        raise BundleError(str(exc)) from exc
    return Bundle(path=root, manifest=manifest, artifact=entry, engine=engine, preprocessing=spec,
                  threshold=threshold, classes=classes, positive_class=positive, device=run_on,
                  notes=notes)
