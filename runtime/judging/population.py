"""The population check: is this X-ray from the population the model was made for, from the
image alone (no DICOM tag needed)?

Method (chosen by measurement, docs/population-check.md): a small CNN of the check's own, fitted
by :mod:`converters.population` on the model's own training X-rays (in population) against
examples of what is outside it (for the reference models, adult chest X-rays from two other
hospitals). It reads a :data:`THUMB` x :data:`THUMB` gray thumbnail of the WHOLE decoded image
(area-resized, not cropped) and answers one score: the higher, the less like the population.
The graph is a separate small ONNX file in the bundle (``population_check.onnx``, declared and
sha256-checked by the manifest's ``population_check``), so it runs the same beside every engine
and format: on ONNX Runtime's CPU provider, or on OpenVINO where ONNX Runtime is not installed.

The limit is the score that holds the manifest's share (at least 99%) of the model's
in-population VALIDATION X-rays; beyond it the image is out of scope with :func:`reason`'s words.
The DICOM age rule (:mod:`runtime.judging.scope`) wins when a DICOM says the patient's age: the
image is then not asked.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: side of the square gray thumbnail the check reads (the whole image, area-resized)
THUMB = 64
#: the graph's input and output names
INPUT = "thumbnail"
OUTPUT = "outside_score"


class PopulationCheckError(ValueError):
    """A population check file that cannot be read or run."""


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """A 2-D uint8 image (any size) -> the (THUMB, THUMB) uint8 thumbnail the check reads."""
    import cv2

    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {pixels.shape}")
    if pixels.shape == (THUMB, THUMB):
        return np.ascontiguousarray(pixels)
    return cv2.resize(pixels, (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def reason(score: float, limit: float, looks_like: str, population: str) -> str:
    """The plain words of an image the check puts outside the population."""
    return (f"looks like {looks_like}; this model was trained on {population}: read it without "
            f"the model (population check {score:.2f} > limit {limit:.2f})")


class _Session:
    """The ONNX graph on the bundle artifact's own engine when that is OpenVINO (no second
    runtime in the process: under emulated aarch64 OpenVINO needs /sys mounted, where ONNX
    Runtime crashes), else on ONNX Runtime (CPU), or on OpenVINO where ONNX Runtime is missing.

    ``chunk``: thumbnails per run when a batch is scored (a score does not depend on how the
    batch is cut). ONNX Runtime: one, its call costs little beside the graph's work, and more a
    run raise the peak memory (whole batches of 32: triage's peak RSS by about 20 MiB).
    OpenVINO: up to 32 a run, its call costs more than the graph's work on one thumbnail."""

    chunk = 1

    def __init__(self, model: bytes, engine: str = "onnxruntime"):
        ort = None
        if engine != "openvino":
            try:
                import onnxruntime as ort
            except ImportError:
                ort = None
        if ort is not None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # beside the decode workers: one thread
            options.log_severity_level = 3
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            self.run = lambda x: session.run([OUTPUT], {INPUT: x})[0]
            return
        self.chunk = 32
        try:
            import openvino as ov
        except ImportError:
            raise PopulationCheckError("the population check needs ONNX Runtime or OpenVINO; "
                                       "install the kit's [cpu] extra") from None
        core = ov.Core()
        compiled = core.compile_model(core.read_model(model), "CPU")
        lock = threading.Lock()  # a compiled model's __call__ shares one infer request

        def run(x: np.ndarray) -> np.ndarray:
            with lock:
                return compiled(x)[0]

        self.run = run


@dataclass
class PopulationCheck:
    """The check's graph (its bytes, verified by the loader) and the limit in force."""

    model: bytes
    limit: float
    share: float  # of in-population validation X-rays within the limit, as the build measured
    population: str  # in words, e.g. "children aged 1–5 (Kermany et al. 2018, Guangzhou)"
    looks_like: str  # what the out-of-population examples were, e.g. "an adult chest X-ray"
    engine: str = "onnxruntime"  # the bundle artifact's engine: the check runs on it if OpenVINO

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._session: _Session | None = None

    def __getstate__(self) -> dict:  # Ray ships the check to its decode tasks: not the session
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_session")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def scores(self, thumbnails: np.ndarray) -> np.ndarray:
        """(N, THUMB, THUMB) uint8 thumbnails -> (N,) scores (higher: less like the population)."""
        x = np.asarray(thumbnails, np.float32)
        if x.ndim != 3 or x.shape[1:] != (THUMB, THUMB):
            raise PopulationCheckError(f"thumbnails of shape {x.shape}; expected (N, {THUMB}, "
                                       f"{THUMB})")
        with self._lock:
            if self._session is None:
                self._session = _Session(self.model, self.engine)
        run, chunk = self._session.run, self._session.chunk
        return np.concatenate([np.asarray(run(x[i:i + chunk, None]), np.float64).reshape(-1)
                               for i in range(0, len(x), chunk)] or [np.zeros(0)])

    def verdicts(self, thumbnails: np.ndarray) -> list[str | None]:
        """(N, THUMB, THUMB) uint8 thumbnails, scored together (``_Session.chunk`` a run) -> for
        each, the reason it is outside the population, or None when it is inside."""
        return [reason(score, self.limit, self.looks_like, self.population)
                if score > self.limit else None for score in map(float, self.scores(thumbnails))]

    def judge(self, pixels: np.ndarray) -> str | None:
        """The reason a decoded image is outside the population, or None when it is inside."""
        return self.verdicts(thumbnail(pixels)[None])[0]


def load_check(path: str | Path, limit: float, share: float, population: str,
               looks_like: str, engine: str = "onnxruntime") -> PopulationCheck:
    """Read a check file (already verified against the manifest's sha256 by the caller)."""
    try:
        model = Path(path).read_bytes()
    except OSError as exc:
        raise PopulationCheckError(f"population check {Path(path).name} cannot be read: "
                                   f"{exc}") from None
    return PopulationCheck(model, limit, share, population, looks_like, engine)
