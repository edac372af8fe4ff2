"""The FP32 reference: the PyTorch model itself, run on the same inputs as every artifact."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from benchmarks.runners import sync_runners
from converters.architectures import to_probabilities
from converters.data.labelled import LabelledImages
from converters.findings import Findings
from converters.validate import (
    Evaluation,
    add_test_files,
    evaluate_probs,
    measure_speed,
)
from runtime.contract.manifest import MeasuredWith


def torch_probs(model: nn.Module, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, C) float32 class probabilities from the PyTorch model (eval mode, no grad)."""
    wrapped = to_probabilities(model).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            out.append(wrapped(torch.from_numpy(inputs[start:start + batch_size])).numpy())
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run torch with ``threads`` intra-op threads (None: leave as is), restored afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def reference_evaluation(model: nn.Module, val: LabelledImages, test: LabelledImages,
                         findings: Findings, sensitivity: tuple[float, ...],
                         with_speed: bool = True, threads: int | None = None,
                         test_files: LabelledImages | None = None) -> Evaluation:
    """PyTorch FP32 probabilities, each finding's threshold chosen on val for its
    ``sensitivity``, every finding's metrics on val and test (and on ``test_files``, the test
    X-rays as image files, when given), speed."""
    with torch_threads(threads):
        return _reference(model, val, test, findings, sensitivity, with_speed, test_files)


def _reference(model: nn.Module, val: LabelledImages, test: LabelledImages, findings: Findings,
               sensitivity: tuple[float, ...], with_speed: bool,
               test_files: LabelledImages | None) -> Evaluation:
    val_probs = torch_probs(model, val.inputs)
    broken = ~np.isfinite(val_probs).all(axis=1)
    if broken.any():
        raise ValueError(f"the model gave non-finite outputs (NaN or infinity) for "
                         f"{int(broken.sum())} of {len(broken)} validation images of {val.source}; "
                         "a network must give a finite answer for every real X-ray")
    thresholds = findings.thresholds(val.labels, val_probs, sensitivity)
    result = evaluate_probs(val_probs, torch_probs(model, test.inputs), val, test, findings,
                            thresholds)
    if test_files is not None:
        add_test_files(result, test_files, torch_probs(model, test_files.inputs), findings)
    result.engine = MeasuredWith(engine="pytorch", requested=["cpu"], active=["cpu"],
                                 fell_back=False, inference_precision="f32",
                                 threads=torch.get_num_threads())
    if with_speed:
        wrapped = to_probabilities(model).eval()

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return wrapped(torch.from_numpy(batch)).numpy()

        result.speed = measure_speed(sync_runners(run), val.inputs)
    return result
