"""Evaluation with 95% confidence intervals, and the clinical model card (JSON + figures).

The operating threshold is chosen on the patient-level validation split for the target
sensitivity and then applied unchanged to the test split. Proportions get Wilson intervals, the
AUC a DeLong interval; calibration is shown as a reliability diagram with its ECE.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from torch import nn

from converters.checkpoint import LoadedCheckpoint, ModelSpec
from converters.data.kermany import TEST_FOLDER, TRAIN_FOLDER, KermanySplits, load_kermany
from converters.train import card_basics, library_versions, predict_positive
from evaluation.metrics import (
    auc_interval,
    binary_metrics,
    expected_calibration_error,
    reliability_bins,
    threshold_for_sensitivity,
    wilson_interval,
)

SPLIT_LABELS = {"val": "validation (patient split)", "test": "test"}


def metrics_with_ci(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """AUC, sensitivity, specificity, accuracy at ``threshold``, each with a 95% interval, + ECE."""
    m = binary_metrics(labels, probs, threshold).as_dict()
    m["ci95"] = {"auc": list(auc_interval(labels, probs)),
                 "sensitivity": list(wilson_interval(m["tp"], m["tp"] + m["fn"])),
                 "specificity": list(wilson_interval(m["tn"], m["tn"] + m["fp"])),
                 "accuracy": list(wilson_interval(m["tp"] + m["tn"], m["n"]))}
    m["ece"] = expected_calibration_error(labels, probs)
    return m


def evaluate_clinical(model: nn.Module, spec: ModelSpec, data: KermanySplits,
                      sensitivity: float = 0.98) -> dict:
    """Threshold on val for ``sensitivity``; metrics with CIs on val and test at it."""
    probs = {s: predict_positive(model, data.split(s).images, spec) for s in ("val", "test")}
    labels = {s: data.split(s).labels for s in ("val", "test")}
    threshold = threshold_for_sensitivity(labels["val"], probs["val"], sensitivity)
    result = {"threshold": threshold, "target_sensitivity": sensitivity,
              "probs": probs, "labels": labels}
    for split in ("val", "test"):
        result[split] = metrics_with_ci(labels[split], probs[split], threshold)
    return result


def evaluate_checkpoint(loaded: LoadedCheckpoint, data_path: str | os.PathLike | None,
                        sensitivity: float = 0.98) -> dict:
    """Evaluate a Kermany-trained checkpoint on its patient split and the test folder."""
    data = load_kermany(data_path, loaded.spec.preprocessing)
    return evaluate_clinical(loaded.model, loaded.spec, data, sensitivity)


def _fmt(value: float, ci: list[float]) -> str:
    return f"{value:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def format_table(result: dict) -> str:
    """The val/test table with 95% CIs, as printed by ``evaluate --model clinical``."""
    lines = [f"threshold {result['threshold']:.4f} (chosen on val for sensitivity >= "
             f"{result['target_sensitivity']})",
             f"{'split':5s} {'n':>5s}  {'AUC [95% CI]':24s} {'sensitivity':24s} "
             f"{'specificity':24s} {'accuracy':24s} {'ECE':>6s}"]
    for split in ("val", "test"):
        m = result[split]
        ci = m["ci95"]
        lines.append(f"{split:5s} {m['n']:5d}  {_fmt(m['auc'], ci['auc']):24s} "
                     f"{_fmt(m['sensitivity'], ci['sensitivity']):24s} "
                     f"{_fmt(m['specificity'], ci['specificity']):24s} "
                     f"{_fmt(m['accuracy'], ci['accuracy']):24s} {m['ece']:6.4f}")
    lines.append("AUC: DeLong 95% CI; proportions: Wilson 95% CI; ECE: 10 equal-width bins")
    return "\n".join(lines)


def roc_points(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(probs), kind="mergesort")
    sorted_p, sorted_y = np.asarray(probs)[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(sorted_p)), len(sorted_p) - 1]
    tps, fps = np.cumsum(sorted_y)[last], np.cumsum(~sorted_y)[last]
    return (np.r_[0.0, fps / max(1, (~labels).sum())], np.r_[0.0, tps / max(1, labels.sum())])


def write_figures(result: dict, out_dir: Path, stem: str) -> dict[str, str]:
    """Reliability diagram, ROC with the operating point, confusion matrices (PNG files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {"reliability": f"{stem}_reliability.png", "roc": f"{stem}_roc.png",
             "confusion": f"{stem}_confusion.png"}
    splits = ("val", "test")

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), dpi=100)
    for ax, split in zip(axes, splits):
        mean_p, rate, count = reliability_bins(result["labels"][split], result["probs"][split])
        used = count > 0
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
        ax.bar(np.arange(10)[used] / 10 + 0.05, rate[used], width=0.09, alpha=0.35,
               color="tab:blue", label="observed rate per bin")
        ax.plot(mean_p[used], rate[used], "o-", color="tab:blue", label="mean predicted vs observed")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability of pneumonia",
               ylabel="fraction with pneumonia",
               title=f"{SPLIT_LABELS[split]}: ECE {result[split]['ece']:.3f}")
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / files["reliability"])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4.6), dpi=100)
    for split, color in zip(splits, ("tab:blue", "tab:orange")):
        m = result[split]
        fpr, tpr = roc_points(result["labels"][split], result["probs"][split])
        ax.plot(fpr, tpr, color=color, label=f"{SPLIT_LABELS[split]}: AUC {m['auc']:.3f}")
        ax.plot(1 - m["specificity"], m["sensitivity"], "o", color=color, ms=7,
                markeredgecolor="black")
    ax.plot([], [], "o", color="white", markeredgecolor="black",
            label=f"operating point (threshold {result['threshold']:.3f}, set on validation)")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
           title="ROC")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / files["roc"])
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), dpi=100)
    for ax, split in zip(axes, splits):
        m = result[split]
        matrix = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, str(value), ha="center", va="center",
                    color="white" if value > matrix.max() / 2 else "black", fontsize=12)
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["normal", "pneumonia"],
               yticklabels=["normal", "pneumonia"], xlabel="predicted", ylabel="true",
               title=SPLIT_LABELS[split])
    fig.suptitle(f"confusion at threshold {result['threshold']:.3f}")
    fig.tight_layout()
    fig.savefig(out_dir / files["confusion"])
    plt.close(fig)
    return files


def write_clinical_card(path: Path, checkpoint: Path, model: nn.Module, spec: ModelSpec,
                        data: KermanySplits, result: dict, training: dict) -> Path:
    """The model card JSON (and its figures beside it)."""
    figures = write_figures(result, path.parent, path.stem)
    card = {
        **card_basics(spec, model, checkpoint),
        "data": {
            "dataset": spec.dataset,
            "folders": [TRAIN_FOLDER, TEST_FOLDER],
            "manifest_md5": data.manifest_md5,
            "split": {"by": "patient", "stratified": True,
                      "val_fraction": training["config"]["val_fraction"],
                      "seed": training["config"]["split_seed"]},
            "images": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
            "patients": {"train": len(data.train_patients), "val": len(data.val_patients)},
            "pneumonia": {s: int(data.split(s).labels.sum()) for s in ("train", "val", "test")},
        },
        "threshold": {"value": result["threshold"], "chosen_on": "val",
                      "target_sensitivity": result["target_sensitivity"]},
        "calibration": {"temperature": spec.config.get("temperature", 1.0), "fitted_on": "val",
                        "folded_into": "config.temperature (the model divides its logits by it)",
                        "val_ece_before_temperature": training.get("val_ece_before_temperature"),
                        "val_ece": result["val"]["ece"], "test_ece": result["test"]["ece"],
                        "ece_bins": 10},
        "metrics": {"val": result["val"], "test": result["test"],
                    "intervals": "95%: DeLong (AUC, logit scale), Wilson (proportions)"},
        "figures": figures,
        "training": {k: v for k, v in training.items() if k != "history"}
                    | {"versions": library_versions(), "history": training.get("history")},
    }
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


#: the names :func:`converters.clinical.card_for` calls (shared with converters.classes_card)
evaluate = evaluate_clinical
write_card = write_clinical_card
