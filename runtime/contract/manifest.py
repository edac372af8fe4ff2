"""The bundle contract as types: the manifest (``manifest.json``, schema 2) and the benchmark report.

Every module that reads or writes a manifest goes through :func:`load_manifest` /
:func:`dump_manifest` and the dataclasses below; nothing else reads raw manifest keys. Loading
validates every field against its declared type and refuses a bad bundle with a
:class:`ContractError` (a :class:`runtime.errors.BundleError` for users) naming the bundle, the
field and the fix. Unknown keys are kept in ``extra`` (round-trip safe) so tools may add facts
(e.g. ``verification``) without a schema bump; a breaking change bumps :data:`SCHEMA_VERSION`.

The benchmark report types (:class:`BenchmarkReport` ...) mirror ``benchmarks/reports/report.json``;
everything but the structure the TUI relies on is optional.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
REPORT = "report.md"
REFERENCE_SET = "reference_set.npz"
SITE_CALIBRATION = "site_calibration.json"
SCOPE_REFERENCE = "scope_reference.npz"
POPULATION_CHECK = "population_check.onnx"
GATE_STATUSES = ("pass", "provisional", "fail")
#: what a model can have been trained on (its checkpoint's ``dataset``; recorded in a manifest's
#: ``provenance.dataset``): PneumoniaMNIST 28x28, or the Kermany 224 JPEG folders
DATASETS = ("pneumoniamnist", "kermany")


#: how the crop is resized to the model's input: OpenCV's flags, named ("linear" and "cubic" do
#: not antialias when they shrink), and PIL's filters, which do (torchvision's ``Resize`` on a
#: PIL image or with ``antialias=True``, and timm's eval transform: what most networks trained
#: with them saw)
INTERPOLATIONS = ("area", "linear", "cubic", "linear-antialias", "cubic-antialias")
#: how a model's output columns relate: one softmax row, or one independent sigmoid per label
TASKS = ("multiclass", "multilabel")
#: what a model can be fed: one gray channel, or the gray X-ray repeated as three (RGB-trained nets)
CHANNELS = (1, 3)


#: the crops a model's input can take (:func:`Preprocessing.crop_box` defines each)
CROPS = ("none", "center-square", "center")


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects: a ``height`` x ``width`` input of ``channels`` channels (1, or 3 =
    the gray X-ray repeated), scaled and standardised per channel: ``(x * scale - mean[c]) /
    std[c]``.

    ``size`` is one int for a square input (written so in a manifest, as before) or
    ``(height, width)``; a square given as a pair is stored as one int. ``crop`` says which part
    of the source image is resized to the input (:meth:`crop_box`, the one definition every pixel
    path uses): ``"none"`` (the whole image), ``"center-square"`` (the largest centred square;
    square inputs only) or ``"center"`` with ``crop_fraction`` (timm's ``crop_pct``).

    ``mean`` and ``std`` hold one value (used for every channel) or one per channel. A manifest
    or checkpoint without ``channels`` is a one-channel model (bundles built before it existed);
    one without ``crop_fraction`` has none (only ``"center"`` takes it).
    """

    size: int | tuple[int, int] = 28
    crop: str = "center-square"
    interpolation: str = "area"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = field(default=(0.5,))
    std: tuple[float, ...] = field(default=(0.5,))
    channels: int = 1
    crop_fraction: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _size(self.size))
        if self.crop not in CROPS:
            raise ValueError(f"unknown crop {self.crop!r}; expected one of "
                             f"{', '.join(repr(c) for c in CROPS)}")
        if self.crop == "center":
            fraction = self.crop_fraction
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
                    or not 0.0 < fraction <= 1.0:
                raise ValueError(f"crop_fraction is {fraction!r}; crop 'center' needs a number in "
                                 "(0, 1], e.g. 0.875 (224 of 256)")
            object.__setattr__(self, "crop_fraction", float(fraction))
        elif self.crop_fraction is not None:
            raise ValueError(f"crop_fraction applies to crop 'center' only (crop is "
                             f"{self.crop!r}); remove it")
        if self.crop == "center-square" and self.height != self.width:
            raise ValueError(f"crop 'center-square' needs a square size, not {self.height}x"
                             f"{self.width}; use crop 'center' (crop_fraction 1.0: the largest "
                             "central region of the input's shape) or 'none'")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; "
                             f"expected one of {sorted(INTERPOLATIONS)}")
        if isinstance(self.channels, bool) or self.channels not in CHANNELS:
            raise ValueError(f"channels is {self.channels!r}; expected 1 (gray) or 3 (the gray "
                             "X-ray repeated, for a network trained on RGB images)")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if len(values) not in (1, self.channels):
                raise ValueError(f"{key} has {len(values)} values for {self.channels} channel(s); "
                                 f"give one value, or one per channel ({self.channels})")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be > 0")

    @property
    def height(self) -> int:
        """Rows of the model input."""
        return self.size if isinstance(self.size, int) else self.size[0]

    @property
    def width(self) -> int:
        """Columns of the model input."""
        return self.size if isinstance(self.size, int) else self.size[1]

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.height, self.width

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, crop_height, crop_width): the part of a ``height`` x ``width`` source
        image that is resized to the model input. Every pixel path takes this box (the CPU and
        GPU backends, reduced decodes, the build's data, the bytes-in graph).

        - ``none``: the whole image; ``center-square``: the largest centred square.
        - ``center``: timm's eval transform (``resolve_data_config`` + ``create_transform``),
          which for a square input is torchvision's ImageNet eval, ``Resize(int(size /
          crop_pct))`` + ``CenterCrop(size)``. With ``f = crop_fraction``, ``S = floor(height /
          f)`` x ``floor(width / f)``: a square input's image is resized so that its shorter
          side is ``S`` and its longer ``int(S * longer / shorter)`` (torchvision's ``Resize``
          with one int); a non-square input's by ``r = min(h / S_h, w / S_w)`` to ``round(h /
          r)`` x ``round(w / r)`` (timm's ``ResizeKeepRatio``). ``CenterCrop`` then keeps
          ``height`` x ``width`` from offset ``int(round((resized - kept) / 2))``. That box,
          mapped back to source pixels and rounded to whole pixels (half to even), is the box
          returned: the image is cropped first, then resized once. So it is torchvision's box
          up to half a source pixel (under 1/10 of a model pixel for a full-size X-ray at 224).
        """
        if self.crop == "center-square":
            side = min(height, width)
            return (height - side) // 2, (width - side) // 2, side, side
        if self.crop == "none":
            return 0, 0, height, width
        out_h, out_w = self.shape
        fraction = float(self.crop_fraction or 1.0)
        cover_h, cover_w = math.floor(out_h / fraction), math.floor(out_w / fraction)
        if cover_h == cover_w:  # torchvision's Resize(int): the shorter side becomes cover_h
            shorter = min(height, width)
            resized_h, resized_w = int(cover_h * height / shorter), int(cover_h * width / shorter)
        else:  # timm's ResizeKeepRatio (longest=0): the image covers cover_h x cover_w
            ratio = min(height / cover_h, width / cover_w)
            resized_h, resized_w = round(height / ratio), round(width / ratio)
        boxes = []
        for source, resized, kept in ((height, resized_h, out_h), (width, resized_w, out_w)):
            step = source / resized  # source pixels per resized pixel
            length = min(source, max(1, round(kept * step)))
            start = min(source - length, round(round((resized - kept) / 2) * step))
            boxes.append((start, length))
        (top, crop_h), (left, crop_w) = boxes
        return top, left, crop_h, crop_w

    def per_channel(self, key: str) -> tuple[float, ...]:
        """``mean`` or ``std`` with one value per channel (a single value repeated)."""
        values = getattr(self, key)
        return tuple(values) * self.channels if len(values) == 1 else tuple(values)

    def as_dict(self) -> dict:
        """JSON-ready values: ``size`` an int when square (what older readers take),
        ``crop_fraction`` only for the ``center`` crop."""
        data = asdict(self)
        data["size"] = self.size if isinstance(self.size, int) else list(self.size)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        if self.crop_fraction is None:
            del data["crop_fraction"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        known = {k: data[k] for k in ("size", "crop", "interpolation", "scale", "mean", "std",
                                      "channels", "crop_fraction") if k in data}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)


def _size(value: Any) -> int | tuple[int, int]:
    """One int for a square input, else (height, width); each side an integer >= 1."""
    sides = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(sides) not in (1, 2) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                                       for s in sides):
        raise ValueError(f"size is {value!r}; expected an integer >= 1 or [height, width]")
    return sides[0] if len(sides) == 1 or sides[0] == sides[1] else (sides[0], sides[1])


def rebuild_hint(target: str = "T") -> str:
    return f"rebuild it with `python -m converters build --target {target}`"


class ContractError(ValueError):
    """A manifest (or report) that does not follow the contract; the message names the fix."""


# --------------------------------------------------------------------------------------------
# the manifest


@dataclass
class FileEntry:
    """One file of the bundle, relative to its folder."""

    path: str
    sha256: str
    bytes: int


@dataclass
class TensorSpec:
    name: str
    shape: list[int]
    dtype: str
    meaning: str = ""


@dataclass
class Population:
    """Whom the model's training images came from (the scope rules compare DICOM PatientAge)."""

    description: str
    min_age_years: float
    max_age_years: float


#: both reference models (PneumoniaMNIST and Kermany 224 px) were trained on the Kermany et al.
#: (2018) paediatric chest X-rays: children aged one to five, Guangzhou
CHILDREN_1_TO_5 = Population("children aged 1–5 (Kermany et al. 2018, Guangzhou)", 1.0, 5.0)


@dataclass
class ModelInfo:
    name: str
    classes: list[str]
    positive_class: str
    input: TensorSpec
    output: TensorSpec
    #: optional in schema 2 (bundles built before it was added): readers fall back to
    #: CHILDREN_1_TO_5, the population of both reference models
    population: Population | None = None
    #: the labels that send a case to a doctor, in the model config's order; empty in bundles
    #: built before a model could have several (their one finding is ``positive_class``, which
    #: is always the first finding)
    findings: list[str] = field(default_factory=list)
    #: how the output columns relate: "multiclass" (one softmax row, summing to one) or
    #: "multilabel" (one independent probability per label)
    task: str = "multiclass"

    @property
    def positive_index(self) -> int:
        return self.classes.index(self.positive_class)

    @property
    def finding_labels(self) -> list[str]:
        """Every finding, in order (the first is ``positive_class``)."""
        return list(self.findings) or [self.positive_class]

    @property
    def finding_indices(self) -> list[int]:
        """The output column of each finding, in :attr:`finding_labels`' order."""
        return [self.classes.index(label) for label in self.finding_labels]


@dataclass
class Metrics:
    """Clinical metrics of one split at the bundle threshold."""

    auc: float
    sensitivity: float
    specificity: float
    accuracy: float
    n: int
    tp: int | None = None
    fn: int | None = None
    tn: int | None = None
    fp: int | None = None


@dataclass
class SplitMetrics:
    test: Metrics
    val: Metrics
    #: the test X-rays as the image files a clinic triages (``Provenance.test_files`` names
    #: them), through the runtime's own decoding and preprocessing; present when ``test`` is
    #: another rendering of them (the tiny model: PneumoniaMNIST's arrays vs kermany_test_224)
    test_files: Metrics | None = None


@dataclass
class Parity:
    """An artifact against the PyTorch FP32 model on the validation split."""

    max_abs_diff: float
    mean_abs_diff: float
    agreement: float
    n: int
    split: str = "val"


@dataclass
class Speed:
    """Build-time speed on the build machine: recorded, never used to choose anything."""

    latency_b1_ms: float
    throughput_b64: float
    runs_b1: int
    runs_b64: int


@dataclass
class MeasuredWith:
    """What an engine really ran with when the build measured an artifact."""

    engine: str
    requested: list[str]
    active: list[str]
    fell_back: bool
    inference_precision: str
    threads: int | None = None


@dataclass
class GateVerdict:
    """The clinical gate for one artifact.

    ``status``: "pass" (measured with the providers the target asks for), "provisional" (the
    numbers pass but were measured on other providers, ``measured_on``; the device confirms them
    with ``python -m runtime verify``), "fail". The drops are measured on ``split``: "val" since
    the gate moved to the validation split; manifests without the field were gated on "test".
    """

    status: str
    sensitivity_drop: float
    auc_drop: float
    specificity_drop: float
    reasons: list[str]
    measured_on: list[str]
    asked_for: list[str]
    max_sensitivity_drop: float
    max_auc_drop: float
    max_specificity_drop: float
    split: str = "test"
    #: the share of validation images with the same decision on every finding as the FP32
    #: reference, and the least the gate allowed (None: bundles from before that rule)
    agreement: float | None = None
    min_agreement: float | None = None

    @property
    def passed(self) -> bool:
        """Not failed: a provisional verdict is not a failure, only not yet confirmed."""
        return self.status != "fail"

    def words(self) -> str:
        if self.status == "pass":
            return "pass"
        if self.status == "provisional":
            return (f"provisional: measured on {', '.join(self.measured_on)}, the target asks for "
                    f"{', '.join(self.asked_for)}; the device confirms it (`python -m runtime "
                    "verify`)")
        return "FAIL: " + "; ".join(self.reasons)


@dataclass
class BuildAttempt:
    """One escalation level of an artifact: its gate (on ``gate.split``) and its metrics at the
    bundle threshold; ``val`` is what the gate read (absent in manifests gated on test)."""

    level: str
    seconds: float
    gate: GateVerdict
    test: Metrics
    parity: Parity
    val: Metrics | None = None


@dataclass
class ArtifactBuild:
    seconds: float
    attempts: list[BuildAttempt] = field(default_factory=list)


@dataclass
class ArtifactEntry:
    """One artifact: its files, how to run it (from the format table) and what it measured."""

    path: str
    format: str  # a key of runtime.contract.formats.FORMATS, e.g. "onnx-int8"
    precision: str
    engine: str
    sha256: str
    bytes: int
    files: list[FileEntry]
    total_bytes: int
    parity: Parity
    metrics: SplitMetrics  # of the first finding (the only one for most models)
    gate: GateVerdict  # over every finding: the largest drops
    measured_with: MeasuredWith
    build: ArtifactBuild
    providers: list[str] = field(default_factory=list)  # ONNX Runtime
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str | None = None  # OpenVINO
    precision_hint: str | None = None
    speed: Speed | None = None
    conversion: dict[str, Any] = field(default_factory=dict)
    #: a model with several findings: each finding's metrics (one against the rest, at that
    #: finding's threshold); empty for a model with one finding (``metrics`` is it)
    finding_metrics: dict[str, SplitMetrics] = field(default_factory=dict)

    def all_files(self) -> list[FileEntry]:
        """Every file of the artifact, main file first."""
        if any(f.path == self.path for f in self.files):
            return list(self.files)
        return [FileEntry(self.path, self.sha256, self.bytes), *self.files]


@dataclass
class ThresholdInfo:
    chosen_on: str
    sensitivity: float
    model: str
    val: Metrics


@dataclass
class GatePolicy:
    """What every artifact was gated against: ``split`` is where the drops were measured ("val";
    older bundles say "test"), the same split that chose the INT8 level and the default."""

    reference: str
    split: str
    max_sensitivity_drop: float
    max_auc_drop: float
    max_specificity_drop: float
    min_agreement: float | None = None  # None: bundles from before the agreement rule


@dataclass
class ReferenceModel:
    engine: str
    precision: str
    metrics: SplitMetrics
    speed: Speed | None = None


@dataclass
class ReferenceSet:
    """Real validation images, preprocessed, with each artifact's probabilities at build.

    The npz (``path``) holds ``inputs`` (N, channels, S, S) float32, ``indices`` (into
    ``split``) and one ``probabilities/<artifact path>`` (N, classes) float32 array per artifact.
    """

    path: str
    sha256: str
    bytes: int
    n: int
    split: str
    seed: int
    artifacts: list[str]


@dataclass
class GuardRates:
    """One artifact's feature-space limit and the share of each split within it (measured with
    that artifact's engine at build)."""

    limit: float  # distance that holds ``ScopeGuard.share`` of the validation images
    val_in_scope: float
    test_in_scope: float
    val_n: int
    test_n: int


@dataclass
class ScopeGuard:
    """The feature-space scope guard (optional: bundles without it judge scope by rules only).

    ``path`` is the reference file (``scope_reference.npz``: class means and the precision
    matrix of the training features, see :mod:`runtime.judging.feature_guard`), covered by ``sha256``;
    ``artifacts`` holds each artifact's limit, set on validation so that ``share`` is in scope.
    """

    method: str  # "mahalanobis"
    description: str
    path: str
    sha256: str
    bytes: int
    output: str  # the graph output carrying the features
    dim: int
    share: float
    fitted_on: str  # e.g. "train split, 4708 images, pytorch fp32 features"
    limit_set_on: str  # e.g. "val split (by patient), each artifact's own features"
    shrinkage: float  # Ledoit-Wolf's, the mean over blocks
    artifacts: dict[str, GuardRates] = field(default_factory=dict)
    #: the widths of the feature blocks (one per conv block) the precision is block-diagonal
    #: over; empty in bundles whose guard reads one block (the penultimate features)
    blocks: list[int] = field(default_factory=list)


@dataclass
class PopulationCheckInfo:
    """The population check (optional: :mod:`runtime.judging.population`): ``path`` is its ONNX
    graph, covered by ``sha256``; ``limit`` holds ``share`` of the in-population validation
    X-rays, re-measured at build (``val_in_scope`` of ``val_n``); ``looks_like`` names the
    out-of-population examples it was fitted against, in the words its verdict uses."""

    path: str
    sha256: str
    bytes: int
    method: str
    limit: float
    share: float
    looks_like: str  # e.g. "an adult chest X-ray"
    fitted_on: str  # the in-population and out-of-population images, in words
    val_in_scope: float
    val_n: int
    thumbnail: int  # side of the square gray thumbnail the graph reads
    #: the fit's card (population_check.json: every figure it measured, cross-source included)
    card: dict[str, Any] | None = None


@dataclass
class Skipped:
    path: str
    format: str
    reason: str


@dataclass
class Provenance:
    checkpoint: str
    checkpoint_sha256: str
    architecture: str
    config: dict[str, Any]
    data: str
    data_md5: str
    calibration_images: int
    built_at: str
    machine: str
    versions: dict[str, str]
    calibration_seed: int = 0
    load_average: list[float] | None = None
    threads: int | None = None
    command: str = ""
    #: one of DATASETS: the model's training data, whose test split evaluates the bundle. None in
    #: a manifest written before the field existed (the runtime does not need it; the
    #: benchmarks refuse such a bundle and ask for a rebuild)
    dataset: str | None = None
    #: the folder (and its manifest's md5) behind every ``SplitMetrics.test_files``; None
    #: when the test split already is image files, or those files were not beside the data
    test_files: str | None = None
    #: a bundle built from a model config (``converters build --config``): the ``model.toml``
    #: as the build read it (absolute path) and its sha256; its ``[data]`` and network are the
    #: benchmarks' test images and FP32 reference. None for a kit checkpoint's bundle
    model_config: str | None = None
    model_config_sha256: str | None = None


@dataclass
class BuildInfo:
    seconds: float


@dataclass
class Manifest:
    """``manifest.json`` of a bundle (schema 2)."""

    schema_version: int
    target: str
    description: str
    model: ModelInfo
    preprocessing: Preprocessing
    preprocessing_backend: str
    threshold: float  # of the first finding (``model.positive_class``)
    threshold_info: ThresholdInfo
    default_artifact: str
    default_artifact_reason: str
    gate: GatePolicy
    reference: ReferenceModel
    provenance: Provenance
    build: BuildInfo
    artifacts: list[ArtifactEntry]
    reference_set: ReferenceSet | None = None
    scope_guard: ScopeGuard | None = None  # optional: rules-only bundles leave it out
    files: list[FileEntry] = field(default_factory=list)
    notes: str = ""
    skipped: list[Skipped] = field(default_factory=list)
    verification: dict[str, Any] = field(default_factory=dict)  # e.g. aarch64_emulated
    #: a site's own operating point (``python -m converters calibrate``): the file, its sha256
    site_calibration: FileEntry | None = None
    #: the population check from the image alone (bundles without it: the DICOM age rule only)
    population_check: PopulationCheckInfo | None = None
    #: every finding's threshold, chosen on validation (empty in bundles built before a model
    #: could have several findings: ``threshold`` is the one); see :meth:`thresholds`
    finding_thresholds: dict[str, float] = field(default_factory=dict)
    #: how each finding's threshold was chosen (same shape as ``threshold_info``; empty when
    #: the model has one finding)
    finding_threshold_info: dict[str, ThresholdInfo] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept as they were

    def thresholds(self) -> dict[str, float]:
        """The build's threshold of every finding, in the model's finding order."""
        if not self.finding_thresholds:
            return {self.model.positive_class: self.threshold}
        return {label: self.finding_thresholds[label] for label in self.model.finding_labels}

    def artifact(self, name: str) -> ArtifactEntry:
        for entry in self.artifacts:
            if entry.path == name:
                return entry
        raise KeyError(name)

    @property
    def default(self) -> ArtifactEntry:
        return self.artifact(self.default_artifact)


# --------------------------------------------------------------------------------------------
# the site calibration (site_calibration.json, declared in the manifest): one site's own images


@dataclass
class SiteClassCounts:
    """What became of one class's labelled images at the site."""

    listed: int
    errors: int  # could not be read or decoded: not scored
    out_of_scope: int  # scored but outside the model's scope: always flagged, never cleared
    in_scope: int  # scored and in scope: the threshold is set on these


@dataclass
class SiteOperatingPoint:
    """Sensitivity and specificity at one threshold on the site's in-scope images (95% Wilson
    intervals), and as deployed (out-of-scope images counted as flagged, errors left out)."""

    threshold: float
    sensitivity: float
    sensitivity_low: float
    sensitivity_high: float
    specificity: float
    specificity_low: float
    specificity_high: float
    tp: int
    fn: int
    tn: int
    fp: int
    deployed_sensitivity: float
    deployed_specificity: float


@dataclass
class SiteFinding:
    """One finding of a model with several, one against the rest on the site's in-scope images:
    its AUC (95% DeLong) and its operating points at the build's and the site's threshold."""

    target_sensitivity: float
    auc: float
    auc_low: float
    auc_high: float
    at_build_threshold: SiteOperatingPoint
    at_site_threshold: SiteOperatingPoint


@dataclass
class SiteSource:
    """The bundle a calibration was derived from."""

    bundle: str
    target: str
    built_at: str
    manifest_sha256: str
    artifact: str  # the artifact whose probabilities were measured
    artifact_sha256: str


@dataclass
class SiteCalibration:
    """A site's operating point: ``threshold`` replaces the build threshold for ``source.artifact``."""

    site: str
    created_at: str
    source: SiteSource
    labelled: str  # the labelled folder or CSV, as given
    positive_class: str
    target_sensitivity: float
    rule: str
    threshold: float
    counts: dict[str, SiteClassCounts]
    at_build_threshold: SiteOperatingPoint
    at_site_threshold: SiteOperatingPoint
    auc: float
    auc_low: float
    auc_high: float
    command: str = ""
    #: a model with several findings: the site's threshold of each, ``threshold`` being the
    #: first's (empty when the model has one finding)
    finding_thresholds: dict[str, float] = field(default_factory=dict)
    #: a model with several findings: each finding's figures (the ``auc`` and operating points
    #: above are the first finding's); empty when the model has one finding
    findings: dict[str, SiteFinding] = field(default_factory=dict)
    #: a multi-label model: every labelled image counted once (an image may carry several of
    #: its labels or none, so ``counts``, images per label, do not add up); None when each
    #: image carries one label
    images: SiteClassCounts | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def thresholds(self) -> dict[str, float]:
        """The site's threshold of every finding calibrated."""
        return dict(self.finding_thresholds) or {self.positive_class: self.threshold}


def site_calibration_from_dict(data: Any, source: str = "site calibration") -> SiteCalibration:
    """Validate and type a site calibration; ``source`` names it in errors."""
    try:
        site = parse(SiteCalibration, data)
    except ContractError as exc:
        raise ContractError(f"{source}: field {exc}; calibrate again with "
                            "`python -m converters calibrate`") from None
    if not 0.0 <= site.threshold <= 1.0 or site.positive_class not in site.counts:
        raise ContractError(f"{source}: threshold {site.threshold} or positive class "
                            f"{site.positive_class!r} is invalid; calibrate again")
    return site


# --------------------------------------------------------------------------------------------
# the benchmark report (benchmarks/reports/report.json): the parts the TUI reads are typed,
# everything else stays optional or in ``extra``


@dataclass
class QualityNumbers:
    """A row's quality on the test images: the first finding's against the rest, at the
    bundle's threshold for it; ``findings`` every finding's (a model with several; None in
    reports of a one-finding model and in reports written before it was added)."""

    auc: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    accuracy: float | None = None
    n: int | None = None
    threshold: float | None = None
    findings: dict[str, QualityNumbers] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReportRow:
    kind: str  # "baseline" | "artifact"
    name: str
    status: str  # "ok" | "failed" | "not-timed"
    format: str | None = None
    precision: str | None = None
    engine: str | None = None
    is_default: bool = False
    best: bool = False
    size_bytes: int | None = None
    latency_ms: dict[str, Any] | None = None
    throughput: dict[str, dict[str, Any]] | None = None
    memory: dict[str, Any] | None = None
    quality: QualityNumbers | None = None
    quality_delta: dict[str, Any] | None = None
    execution: dict[str, Any] | None = None
    e2e: dict[str, Any] | None = None
    verdict: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def images_per_second(self, batch: int) -> float | None:
        return ((self.throughput or {}).get(str(batch)) or {}).get("images_per_second")


@dataclass
class ReportSection:
    """One bundle's part of the report."""

    status: str = "ok"
    label: str | None = None
    path: str | None = None
    target: str | None = None
    threshold: float | None = None
    default_artifact: str | None = None
    notes: list[str] = field(default_factory=list)
    rows: list[ReportRow] = field(default_factory=list)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchmarkReport:
    bundles: list[ReportSection]
    created_at: str | None = None
    command: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# validation: one generic walker over the dataclasses' declared types

T = TypeVar("T")


def _describe(tp: Any) -> str:
    if dataclasses.is_dataclass(tp) or tp is Preprocessing:
        return "an object"
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return "a list"
    if origin is dict or tp is dict:
        return "an object"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            type(None): "null", Any: "any value"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against ``tp`` (and nested dataclasses built); raises ContractError."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ContractError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ContractError(
            f"{where} is {value!r}, expected {_describe(tp)}")
    if tp is Preprocessing:
        if not isinstance(value, dict):
            raise ContractError(f"{where} is {type(value).__name__}, expected an object")
        try:
            return Preprocessing.from_dict(value)
        except (TypeError, ValueError) as exc:
            raise ContractError(f"{where} is invalid: {exc}") from None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ContractError(f"{where} is {type(value).__name__}, expected an object")
        return _from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ContractError(f"{where} is {type(value).__name__}, expected a list")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ContractError(f"{where} is {type(value).__name__}, expected an object")
        args = typing.get_args(tp)
        if not args:
            return dict(value)
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ContractError(f"{where} is {value!r}, expected a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ContractError(f"{where} is {value!r}, expected an integer")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ContractError(f"{where} is {value!r}, expected {_describe(tp)}")
        return value
    raise TypeError(f"contract type {tp!r} at {where} is not supported")  # a bug in this module


def _from_dict(cls: type[T], data: dict, where: str) -> T:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    names = set()
    for f in dataclasses.fields(cls):
        names.add(f.name)
        if f.name == "extra":
            continue
        path = f"{where}.{f.name}" if where else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ContractError(f"{path} is missing")
            continue
        kwargs[f.name] = _convert(data[f.name], hints[f.name], path)
    if "extra" in names:
        kwargs["extra"] = {k: v for k, v in data.items() if k not in names}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """A contract object as JSON-ready values (None-valued optional fields left out)."""
    if isinstance(obj, Preprocessing):
        return obj.as_dict()
    if dataclasses.is_dataclass(obj):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name == "extra":
                out.update(to_dict(value))
            elif value is not None:
                out[f.name] = to_dict(value)
        return out
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def parse(cls: type[T], data: Any, what: str = "") -> T:
    """Build a contract object from JSON values, validating every field."""
    if not isinstance(data, dict):
        raise ContractError(f"{what or cls.__name__} is {type(data).__name__}, expected an object")
    return _from_dict(cls, data, what)


# --------------------------------------------------------------------------------------------
# manifest files


def manifest_from_dict(data: Any, source: str = "manifest") -> Manifest:
    """Validate and type a manifest; ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise ContractError(f"{source} is not a JSON object; {rebuild_hint()}")
    target = data.get("target") if isinstance(data.get("target"), str) else "T"
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        if isinstance(version, int) and version < SCHEMA_VERSION:
            raise ContractError(f"{source} was built by an older kit (schema {version}); "
                                f"{rebuild_hint(target)}")
        raise ContractError(f"{source} has schema_version {version!r}; this kit reads schema "
                            f"{SCHEMA_VERSION}: update the kit or {rebuild_hint(target)}")
    try:
        manifest = _from_dict(Manifest, data, "")
    except ContractError as exc:
        raise ContractError(f"{source}: field {exc}; {rebuild_hint(target)}") from None
    _check_consistency(manifest, source)
    return manifest


def _check_consistency(m: Manifest, source: str) -> None:
    def bad(text: str) -> ContractError:
        return ContractError(f"{source}: {text}; {rebuild_hint(m.target)}")

    if not m.artifacts:
        raise bad("field artifacts is empty")
    if len(m.model.classes) < 2 or m.model.positive_class not in m.model.classes:
        raise bad(f"field model.classes {m.model.classes} / model.positive_class "
                  f"{m.model.positive_class!r} are invalid")
    _check_findings(m, bad)
    if m.model.input.shape[-2:] != list(m.preprocessing.shape):
        raise bad(f"field model.input.shape {m.model.input.shape} does not match "
                  f"preprocessing.size {m.preprocessing.size} (height x width "
                  f"{m.preprocessing.height}x{m.preprocessing.width})")
    if len(m.model.input.shape) == 4 and m.model.input.shape[1] != m.preprocessing.channels:
        raise bad(f"field model.input.shape {m.model.input.shape} has {m.model.input.shape[1]} "
                  f"channel(s), preprocessing.channels is {m.preprocessing.channels}")
    if not 0.0 <= m.threshold <= 1.0:
        raise bad(f"field threshold is {m.threshold}, expected a probability in [0, 1]")
    names = [a.path for a in m.artifacts]
    if m.default_artifact not in names:
        raise bad(f"field default_artifact {m.default_artifact!r} is not one of the artifacts "
                  f"({', '.join(names)})")
    if m.provenance.dataset is not None and m.provenance.dataset not in DATASETS:
        raise bad(f"field provenance.dataset is {m.provenance.dataset!r}, expected one of "
                  f"{', '.join(DATASETS)}")
    for i, entry in enumerate(m.artifacts):
        if entry.gate.status not in GATE_STATUSES:
            raise bad(f"field artifacts[{i}].gate.status is {entry.gate.status!r}, expected one "
                      f"of {', '.join(GATE_STATUSES)}")
    if m.scope_guard is not None:
        _check_scope_guard(m.scope_guard, bad)


def _check_findings(m: Manifest, bad) -> None:
    model = m.model
    if model.task not in TASKS:
        raise bad(f"field model.task is {model.task!r}, expected one of {', '.join(TASKS)}")
    if model.findings:
        unknown = [f for f in model.findings if f not in model.classes]
        if unknown or len(set(model.findings)) != len(model.findings):
            raise bad(f"field model.findings {model.findings} must be distinct labels of "
                      f"model.classes {model.classes}")
        if model.findings[0] != model.positive_class:
            raise bad(f"field model.positive_class {model.positive_class!r} must be the first "
                      f"of model.findings {model.findings}")
    if m.finding_thresholds:
        if sorted(m.finding_thresholds) != sorted(model.finding_labels):
            raise bad(f"field finding_thresholds names {sorted(m.finding_thresholds)}, the "
                      f"model's findings are {model.finding_labels}")
        if m.finding_thresholds[model.positive_class] != m.threshold:
            raise bad(f"field finding_thresholds.{model.positive_class} differs from threshold")
        if not all(0.0 <= t <= 1.0 for t in m.finding_thresholds.values()):
            raise bad("field finding_thresholds holds a value outside [0, 1]")


def _check_scope_guard(g: ScopeGuard, bad) -> None:
    if not 0.0 < g.share <= 1.0:
        raise bad(f"field scope_guard.share is {g.share}, expected a share in (0, 1]")
    if g.dim < 1:
        raise bad(f"field scope_guard.dim is {g.dim}, expected a positive feature count")
    if g.blocks and (sum(g.blocks) != g.dim or min(g.blocks) < 1):
        raise bad(f"field scope_guard.blocks {g.blocks} does not add up to dim {g.dim}")
    for name, rates in g.artifacts.items():
        if not rates.limit > 0:
            raise bad(f"field scope_guard.artifacts.{name}.limit is {rates.limit}, expected a "
                      "positive distance")


def load_manifest(bundle_dir: str | Path) -> Manifest:
    """Read and validate ``bundle_dir/manifest.json``."""
    root = Path(bundle_dir)
    path = root / MANIFEST
    if not root.is_dir():
        raise ContractError(f"bundle folder not found: {root} (build one with "
                            "`python -m converters build --target cpu`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(f"{root} is not a bundle: it has no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise ContractError(f"{path} cannot be read: {exc}; {rebuild_hint()}") from exc
    return manifest_from_dict(data, f"bundle {root}")


def dump_manifest(manifest: Manifest, path: str | Path) -> None:
    """Write ``manifest`` as JSON (validated first: a writer cannot produce what a reader refuses)."""
    data = to_dict(manifest)
    manifest_from_dict(json.loads(json.dumps(data)), f"manifest being written to {path}")
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def report_from_dict(data: Any, source: str = "report") -> BenchmarkReport:
    """Validate and type a benchmark report (``report.json``)."""
    if not isinstance(data, dict) or not isinstance(data.get("bundles"), list):
        raise ContractError(f"{source} is not a benchmark report (no 'bundles' list)")
    try:
        return _from_dict(BenchmarkReport, data, "")
    except ContractError as exc:
        raise ContractError(f"{source}: field {exc}; rerun `python -m benchmarks run`") from None
