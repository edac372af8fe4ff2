"""Evaluation and model card of a Kermany model with more than two classes (the pneumonia-type
model: NORMAL / BACTERIAL / VIRAL), with 95% confidence intervals and figures.

Every class but the first (NORMAL) is a finding. Per class: the one-vs-rest AUC; per finding, a
threshold chosen on the patient-level validation split (the highest with validation sensitivity
>= the target) and, at it, sensitivity and specificity on validation and test. "Any finding" is
what the runtime flags: an image is flagged when some finding reaches its threshold, judged
against the image being abnormal (not NORMAL). The confusion matrix is of the most probable class
(argmax). The test split is only reported: nothing is chosen on it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from torch import nn

from converters.checkpoint import LoadedCheckpoint, ModelSpec
from converters.clinical_card import SPLIT_LABELS, metrics_with_ci, roc_points
from converters.data.kermany import (
    TEST_FOLDER,
    TRAIN_FOLDER,
    KermanySplits,
    labelling_of,
    load_kermany,
)
from converters.train import card_basics, library_versions, predict_probabilities
from evaluation.metrics import (
    auc_interval,
    confusion_matrix,
    macro_auc,
    reliability_bins,
    roc_auc,
    threshold_for_sensitivity,
    top_label_calibration_error,
    wilson_interval,
)

SPLITS = ("val", "test")
LABEL_SOURCES = {TRAIN_FOLDER: "manifest.csv finding column (normal, bacteria, virus)",
                 TEST_FOLDER: "file name (personN_bacteria_M, personN_virus_M; NORMAL/: normal)"}


def findings_of(spec: ModelSpec) -> tuple[str, ...]:
    """The classes that send a case to a doctor: every class but the first (NORMAL)."""
    return tuple(spec.classes[1:])


def any_finding(labels: np.ndarray, probs: np.ndarray, thresholds: list[float]) -> dict:
    """The runtime's flag (some finding at or above its threshold) against the image being
    abnormal (label > 0): sensitivity, specificity, accuracy with Wilson intervals, and the AUC
    of 1 - p(NORMAL) with its DeLong interval."""
    abnormal = np.asarray(labels) > 0
    flagged = (probs[:, 1:] >= np.asarray(thresholds)).any(axis=1)
    tp, fn = int((flagged & abnormal).sum()), int((~flagged & abnormal).sum())
    tn, fp = int((~flagged & ~abnormal).sum()), int((flagged & ~abnormal).sum())
    auc = auc_interval(abnormal, 1.0 - probs[:, 0])
    return {"auc": roc_auc(abnormal, 1.0 - probs[:, 0]),
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
            "accuracy": (tp + tn) / len(abnormal), "n": len(abnormal),
            "tp": tp, "fn": fn, "tn": tn, "fp": fp,
            "ci95": {"auc": list(auc), "sensitivity": list(wilson_interval(tp, tp + fn)),
                     "specificity": list(wilson_interval(tn, tn + fp))}}


def split_metrics(labels: np.ndarray, probs: np.ndarray, spec: ModelSpec,
                  thresholds: dict[str, float]) -> dict:
    """One split's figures: per class (AUC; per finding also sensitivity and specificity at its
    threshold), any finding, the argmax confusion matrix, accuracy, macro AUC, top-label ECE."""
    per_class = {}
    for index, name in enumerate(spec.classes):
        positive = labels == index
        if name in thresholds:
            per_class[name] = metrics_with_ci(positive, probs[:, index], thresholds[name])
        else:
            per_class[name] = {"auc": roc_auc(positive, probs[:, index]), "n": len(labels),
                               "positives": int(positive.sum()),
                               "ci95": {"auc": list(auc_interval(positive, probs[:, index]))}}
    predicted = probs.argmax(axis=1)
    return {"n": len(labels), "per_class": per_class,
            "any_finding": any_finding(labels, probs, [thresholds[f] for f in findings_of(spec)]),
            "confusion": {"rows": "true class", "columns": "predicted class (argmax)",
                          "classes": list(spec.classes),
                          "matrix": confusion_matrix(labels, predicted,
                                                     len(spec.classes)).tolist()},
            "accuracy": float((predicted == labels).mean()),
            "macro_auc": macro_auc(labels, probs),
            "ece": top_label_calibration_error(labels, probs)}


def evaluate(model: nn.Module, spec: ModelSpec, data: KermanySplits, sensitivity: float = 0.98
             ) -> dict:
    """Thresholds per finding on val for ``sensitivity``; every figure on val and test."""
    probs = {s: predict_probabilities(model, data.split(s).images, spec) for s in SPLITS}
    labels = {s: data.split(s).labels for s in SPLITS}
    thresholds = {name: threshold_for_sensitivity(labels["val"] == spec.classes.index(name),
                                                  probs["val"][:, spec.classes.index(name)],
                                                  sensitivity)
                  for name in findings_of(spec)}
    result = {"thresholds": thresholds, "target_sensitivity": sensitivity,
              "classes": list(spec.classes), "findings": list(findings_of(spec)),
              "probs": probs, "labels": labels}
    for split in SPLITS:
        result[split] = split_metrics(labels[split], probs[split], spec, thresholds)
    return result


def evaluate_checkpoint(loaded: LoadedCheckpoint, data_path: str | os.PathLike | None,
                        sensitivity: float = 0.98) -> dict:
    """Evaluate a Kermany checkpoint of these classes on its patient split and the test
    folder."""
    data = load_kermany(data_path, loaded.spec.preprocessing,
                        labelling=labelling_of(loaded.spec.classes))
    return evaluate(loaded.model, loaded.spec, data, sensitivity)


def _fmt(value: float, ci: list[float]) -> str:
    return f"{value:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def format_table(result: dict) -> str:
    """Per class and split: one-vs-rest AUC, and sensitivity and specificity at each finding's
    validation threshold; any finding; the confusion matrices."""
    thresholds = ", ".join(f"{name} {value:.4f}" for name, value in result["thresholds"].items())
    lines = [(f"thresholds {thresholds} (each chosen on val for sensitivity >= "
              f"{result['target_sensitivity']})"),
             (f"{'split':5s} {'class':11s} {'n+':>5s}  {'AUC one-vs-rest':24s} "
              f"{'sensitivity':24s} {'specificity':24s}")]
    for split in SPLITS:
        m = result[split]
        rows = [*m["per_class"].items(), ("any finding", m["any_finding"])]
        for name, c in rows:
            positives = c.get("positives", c.get("tp", 0) + c.get("fn", 0))
            sens = _fmt(c["sensitivity"], c["ci95"]["sensitivity"]) if "sensitivity" in c else "-"
            spec = _fmt(c["specificity"], c["ci95"]["specificity"]) if "specificity" in c else "-"
            lines.append(f"{split:5s} {name:11s} {positives:5d}  {_fmt(c['auc'], c['ci95']['auc']):24s} "
                         f"{sens:24s} {spec:24s}")
        lines.append(f"{split:5s} accuracy (argmax) {m['accuracy']:.4f}, macro AUC "
                     f"{m['macro_auc']:.4f}, top-label ECE {m['ece']:.4f}; confusion (rows true, "
                     f"columns predicted, {' / '.join(result['classes'])}): "
                     f"{m['confusion']['matrix']}")
    lines.append("any finding: flagged when some finding reaches its threshold, against not "
                 "NORMAL (AUC of 1 - p(NORMAL)). AUC: DeLong 95% CI; proportions: Wilson 95% CI")
    return "\n".join(lines)


def write_figures(result: dict, out_dir: Path, stem: str) -> dict[str, str]:
    """ROC one-vs-rest per class with each finding's operating point, the confusion matrices
    (argmax), and the reliability of the predicted class's probability (PNG files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {"reliability": f"{stem}_reliability.png", "roc": f"{stem}_roc.png",
             "confusion": f"{stem}_confusion.png"}
    classes = result["classes"]
    colors = ("tab:green", "tab:blue", "tab:red", "tab:purple", "tab:orange")

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.6), dpi=100)
    for ax, split in zip(axes, SPLITS):
        labels, probs = result["labels"][split], result["probs"][split]
        for index, (name, color) in enumerate(zip(classes, colors)):
            c = result[split]["per_class"][name]
            fpr, tpr = roc_points(labels == index, probs[:, index])
            ax.plot(fpr, tpr, color=color, label=f"{name}: AUC {c['auc']:.3f}")
            if "sensitivity" in c:
                ax.plot(1 - c["specificity"], c["sensitivity"], "o", color=color, ms=7,
                        markeredgecolor="black")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
               title=f"{SPLIT_LABELS[split]}: one-vs-rest ROC")
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle("dots: each finding's threshold, chosen on validation", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / files["roc"])
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.2), dpi=100)
    ticks = list(range(len(classes)))
    for ax, split in zip(axes, SPLITS):
        matrix = np.array(result[split]["confusion"]["matrix"])
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, str(value), ha="center", va="center",
                    color="white" if value > matrix.max() / 2 else "black", fontsize=12)
        ax.set(xticks=ticks, yticks=ticks, xticklabels=[c.lower() for c in classes],
               yticklabels=[c.lower() for c in classes], xlabel="predicted (most probable)",
               ylabel="true", title=f"{SPLIT_LABELS[split]}: accuracy "
                                    f"{result[split]['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(out_dir / files["confusion"])
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), dpi=100)
    for ax, split in zip(axes, SPLITS):
        labels, probs = result["labels"][split], result["probs"][split]
        correct = probs.argmax(axis=1) == labels
        mean_p, rate, count = reliability_bins(correct, probs.max(axis=1))
        used = count > 0
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
        ax.bar(np.arange(10)[used] / 10 + 0.05, rate[used], width=0.09, alpha=0.35,
               color="tab:blue", label="observed accuracy per bin")
        ax.plot(mean_p[used], rate[used], "o-", color="tab:blue",
                label="mean confidence vs accuracy")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="probability of the predicted class",
               ylabel="fraction predicted right",
               title=f"{SPLIT_LABELS[split]}: top-label ECE {result[split]['ece']:.3f}")
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / files["reliability"])
    plt.close(fig)
    return files


def write_card(path: Path, checkpoint: Path, model: nn.Module, spec: ModelSpec,
               data: KermanySplits, result: dict, training: dict) -> Path:
    """The model card JSON (and its figures beside it)."""
    figures = write_figures(result, path.parent, path.stem)
    counts = {s: {name: int((data.split(s).labels == i).sum())
                  for i, name in enumerate(spec.classes)} for s in ("train", "val", "test")}
    card = {
        **card_basics(spec, model, checkpoint),
        "findings": list(findings_of(spec)),
        "data": {
            "dataset": spec.dataset,
            "folders": [TRAIN_FOLDER, TEST_FOLDER],
            "manifest_md5": data.manifest_md5,
            "labels_from": LABEL_SOURCES,
            "split": {"by": "patient", "stratified": "normal vs. abnormal patients",
                      "val_fraction": training["config"]["val_fraction"],
                      "seed": training["config"]["split_seed"],
                      "same_as": "the clinical model's (models/clinical/val.csv)"},
            "images": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
            "patients": {"train": len(data.train_patients), "val": len(data.val_patients)},
            "per_class": counts,
        },
        "thresholds": {"values": result["thresholds"], "chosen_on": "val",
                       "target_sensitivity": result["target_sensitivity"],
                       "rule": "per finding, the highest with validation sensitivity >= the "
                               "target (one-vs-rest)"},
        "calibration": {"temperature": spec.config.get("temperature", 1.0), "fitted_on": "val",
                        "folded_into": "config.temperature (the model divides its logits by it)",
                        "ece": "top-label (the predicted class's probability against accuracy)",
                        "val_ece_before_temperature": training.get("val_ece_before_temperature"),
                        "val_ece": result["val"]["ece"], "test_ece": result["test"]["ece"],
                        "ece_bins": 10},
        "metrics": {"val": result["val"], "test": result["test"],
                    "intervals": "95%: DeLong (AUC, logit scale), Wilson (proportions)",
                    "model_selection": "early stopping on the mean one-vs-rest validation AUC"},
        "figures": figures,
        "training": {k: v for k, v in training.items() if k != "history"}
                    | {"versions": library_versions(), "history": training.get("history")},
    }
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path
