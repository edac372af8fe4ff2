"""A model's findings as the build scores them: each one against the rest.

A model has one or more findings (the labels that send a case to a doctor). Its evaluation sets
keep what scoring each finding needs (:class:`~converters.data.labelled.LabelledImages`): the
class index per image for a multiclass model, one 0/1 per label per image for a multilabel one.
:class:`Findings` turns those labels and the model's (N, classes) probabilities into one binary
problem per finding (that finding's column against everything else), chooses each finding's
threshold on validation (:func:`evaluation.metrics.decision_threshold`) and measures each at its
threshold. A model with one finding is the case the reference models have always been: the
first finding is ``positive_class``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.metrics import (
    BinaryMetrics,
    binary_metrics,
    decision_threshold,
    roc_auc,
)

#: how a model's output columns relate (runtime.contract.manifest.TASKS)
MULTICLASS, MULTILABEL = "multiclass", "multilabel"


@dataclass(frozen=True)
class Findings:
    """The findings of one model: ``names`` in order (the first is the positive class),
    ``columns`` their output columns, ``task`` how the columns relate."""

    names: tuple[str, ...]
    columns: tuple[int, ...]
    task: str = MULTICLASS

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.columns):
            raise ValueError(f"findings {self.names}: one output column each")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def several(self) -> bool:
        return len(self.names) > 1

    def targets(self, labels: np.ndarray, k: int) -> np.ndarray:
        """(N,) bool: which images carry finding ``k`` (multiclass: that class; multilabel:
        that label's 0/1)."""
        labels = np.asarray(labels)
        if self.task == MULTILABEL:
            if labels.ndim != 2:
                raise ValueError(f"a multilabel model's labels are (N, labels) zeros and ones, "
                                 f"got shape {labels.shape}")
            return labels[:, self.columns[k]].astype(bool)
        if labels.ndim != 1:
            raise ValueError(f"a multiclass model's labels are (N,) class indices, got shape "
                             f"{labels.shape}")
        return labels == self.columns[k]

    def thresholds(self, labels: np.ndarray, probs: np.ndarray, sensitivity: Sequence[float]
                   ) -> tuple[float, ...]:
        """Each finding's threshold: the highest with ``sensitivity[k]`` on these (validation)
        images, one finding against the rest (:func:`decision_threshold`)."""
        chosen = []
        for k, name in enumerate(self.names):
            try:
                chosen.append(decision_threshold(self.targets(labels, k),
                                                 probs[:, self.columns[k]], sensitivity[k]))
            except ValueError as exc:
                raise ValueError(f"finding {name}: {exc}") from exc
        return tuple(chosen)

    def metrics(self, labels: np.ndarray, probs: np.ndarray, thresholds: Sequence[float]
                ) -> list[BinaryMetrics]:
        """Each finding's metrics at its threshold, one against the rest."""
        return [binary_metrics(self.targets(labels, k), probs[:, column], thresholds[k])
                for k, column in enumerate(self.columns)]

    def lowest_auc(self, labels: np.ndarray, probs: np.ndarray) -> float:
        """The lowest AUC over the findings (what INT8's accuracy control keeps up)."""
        return min(roc_auc(self.targets(labels, k), probs[:, column])
                   for k, column in enumerate(self.columns))

    def decisions(self, probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
        """(N, findings) bool: which findings reach their threshold on each image."""
        columns = np.asarray(probs)[:, list(self.columns)]
        return columns >= np.asarray(thresholds, dtype=np.float64)[None, :]


def findings_of(classes: Sequence[str], findings: Sequence[str], task: str) -> Findings:
    """:class:`Findings` ``findings`` of a model whose output columns are ``classes``."""
    return Findings(tuple(findings), tuple(list(classes).index(f) for f in findings), task)
