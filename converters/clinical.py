"""The clinical-resolution reference model: trained on the Kermany X-rays, validated by patient.

Same recipe as the 28x28 ``tiny`` model (:mod:`converters.train`: affine + brightness/contrast
augmentation, class-weighted loss with label smoothing, one-cycle learning rate, early stopping on
validation AUC) plus acquisition augmentation (gamma, low-resolution blur, cutout), at ``size`` px
on whole images squashed to a square (``crop="none"``: what the
Kermany 224 files already are, and what the runtime does to a full-size file). After training, a
temperature is fitted on the patient-level validation split and stored in the architecture
config, so the checkpoint's (and the exported graph's) probabilities are calibrated.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch
from torch import nn

from converters.architectures import build_model
from converters.checkpoint import ModelSpec, save_checkpoint
from converters.data.kermany import (
    DATASET_NAME,
    PNEUMONIA,
    PNEUMONIA_TYPE,
    KermanySplits,
    Labelling,
    load_kermany,
    open_kermany,
    write_split_csvs,
)
from converters.train import TrainConfig, train_member, validation_auc
from runtime.contract.manifest import Preprocessing
from runtime.preprocess.cpu import normalize

CLINICAL_DIR = Path(__file__).resolve().parent.parent / "models" / "clinical"
CLINICAL_NAME = "clinical_cnn"
CLINICAL_CHECKPOINT = CLINICAL_DIR / f"{CLINICAL_NAME}.safetensors"
PNEUMONIA_TYPE_DIR = CLINICAL_DIR.parent / "pneumonia_type"
PNEUMONIA_TYPE_NAME = "pneumonia_type"
PNEUMONIA_TYPE_CHECKPOINT = PNEUMONIA_TYPE_DIR / f"{PNEUMONIA_TYPE_NAME}.safetensors"


@dataclass
class ClinicalConfig(TrainConfig):
    """The clinical model's recipe (defaults = the shipped checkpoint). The class attributes
    say what it learns and where it goes; :class:`PneumoniaTypeConfig` is the same recipe on
    another labelling of the same images."""

    labelling: ClassVar[Labelling] = PNEUMONIA  # the classes, and each image's class
    out_dir: ClassVar[Path] = CLINICAL_DIR  # default --out
    file_stem: ClassVar[str] = CLINICAL_NAME  # default --name

    architecture: str = "clinical_cnn"
    width: int = 12
    depths: tuple[int, ...] = (1, 2, 2, 2)
    size: int = 128
    epochs: int = 12
    patience: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    # acquisition augmentation (exposure, sharpness, cutout) beyond the tiny model's: chosen
    # before the test split was looked at, by a rule fixed in advance (docs/reference-models.md)
    scale: float = 0.15
    brightness: float = 0.15
    contrast: float = 0.30
    gamma: float = 0.4
    lowres: float = 0.5
    erase: float = 0.5
    members: int = 1
    val_fraction: float = 0.2
    split_seed: int = 0
    max_train: int = 0  # >0: train on only this many images (tiny-budget runs and tests)
    temperature: float = 1.0  # fitted on validation after training

    def member_config(self) -> dict:
        return {"width": self.width, "depths": list(self.depths), "dropout": self.dropout,
                "num_classes": len(self.labelling.classes), "temperature": self.temperature}

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(size=self.size, crop="none", interpolation="area")

    def model_name(self) -> str:
        return f"clinical-cnn-{self.size}px"

    def spec(self) -> ModelSpec:
        """The checkpoint spec; its positive class is the first after NORMAL (for several
        findings, the first finding, as :mod:`converters.config.for_build` names it)."""
        classes = self.labelling.classes
        return ModelSpec(self.architecture, self.member_config(), self.preprocessing(), classes,
                         classes[1], name=self.model_name(), dataset=DATASET_NAME)

    def load(self, data_path: str | None, fold: tuple[int, int] | None = None) -> KermanySplits:
        """The patient split (or fold) of the Kermany folders at this recipe's size and labels,
        with ``max_train`` applied."""
        data = load_kermany(data_path, self.preprocessing(), self.val_fraction, self.split_seed,
                            fold, self.labelling)
        return subsample(data, self.max_train, self.seed)


@dataclass
class PneumoniaTypeConfig(ClinicalConfig):
    """The clinical recipe on NORMAL / BACTERIAL / VIRAL (the training folder's ``finding``
    column), on the same patient split; early stopping on the mean one-vs-rest validation
    AUC."""

    labelling: ClassVar[Labelling] = PNEUMONIA_TYPE
    out_dir: ClassVar[Path] = PNEUMONIA_TYPE_DIR
    file_stem: ClassVar[str] = PNEUMONIA_TYPE_NAME

    def model_name(self) -> str:
        return f"pneumonia-type-cnn-{self.size}px"


def config_for(model: str) -> type[ClinicalConfig]:
    """The recipe class of a Kermany model name (``clinical`` or ``pneumonia_type``)."""
    return {"clinical": ClinicalConfig, "pneumonia_type": PneumoniaTypeConfig}[model]


def log_line(message: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def epoch_logger(started: float) -> Callable[[dict], None]:
    def log(entry: dict) -> None:
        log_line(f"epoch {entry['epoch']:3d}  loss {entry['loss']:.4f}  val AUC "
                 f"{entry['val_auc']:.4f}  ({time.perf_counter() - started:.0f} s)")
    return log


def subsample(data: KermanySplits, count: int, seed: int) -> KermanySplits:
    """The same splits with only ``count`` training images (stratified, fixed seed:
    :func:`converters.data.labelled.stratified_sample`); the patient sets still describe the
    whole split."""
    from converters.data.labelled import stratified_sample

    if count <= 0 or count >= len(data.train):
        return data
    index = stratified_sample(data.train.labels, count, seed)
    return replace(data, train=data.train.take(index))


@torch.no_grad()
def logits_of(model: nn.Module, images: np.ndarray, spec: ModelSpec, batch_size: int = 256
              ) -> np.ndarray:
    """(N, C) float64 logits for (N, S, S) uint8 images at model size."""
    model.eval()
    out = [model(torch.from_numpy(normalize(images[i:i + batch_size], spec.preprocessing)))
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).double().numpy() if out else np.zeros((0, 2))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T).

    Deterministic: a log-spaced grid over [0.05, 20], then a finer grid around the best point.
    """
    labels = np.asarray(labels).astype(np.int64)

    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(len(labels)), labels].mean())

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 241))
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    fine = best * np.exp(np.linspace(-0.03, 0.03, 61))
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def with_temperature(model: nn.Module, spec: ModelSpec, temperature: float
                     ) -> tuple[nn.Module, ModelSpec]:
    """The same weights with ``temperature`` folded into the model's config (and forward)."""
    config = {**spec.config, "temperature": round(temperature, 6)}
    calibrated = build_model(spec.architecture, **config)
    calibrated.load_state_dict(model.state_dict())
    calibrated.eval()
    return calibrated, ModelSpec(spec.architecture, config, spec.preprocessing, spec.classes,
                                 spec.positive_class, spec.name, spec.dataset)


@dataclass
class TrainedClinical:
    model: nn.Module
    spec: ModelSpec
    history: dict
    seconds: float
    temperature: float
    ece_before: float = float("nan")
    extra: dict = field(default_factory=dict)


def train_clinical(cfg: ClinicalConfig, data: KermanySplits, progress: bool = False
                   ) -> TrainedClinical:
    """Train one clinical model, then fit and fold in its temperature on validation."""
    started = time.perf_counter()
    model, history = train_member(cfg, data, cfg.seed, progress, epoch_logger(started))
    seconds = time.perf_counter() - started
    spec = cfg.spec()
    val_logits = logits_of(model, data.val.images, spec)
    temperature = fit_temperature(val_logits, data.val.labels)
    ece_before = calibration_error(data.val.labels, _softmax(val_logits))
    model, spec = with_temperature(model, spec, temperature)
    return TrainedClinical(model, spec, history, seconds, temperature, ece_before)


def calibration_error(labels: np.ndarray, probs: np.ndarray) -> float:
    """ECE (10 bins) of (N, C) probabilities: the positive class's for two classes, the
    predicted class's confidence against its accuracy for more."""
    from evaluation.metrics import expected_calibration_error, top_label_calibration_error

    if probs.shape[1] == 2:
        return expected_calibration_error(labels, probs[:, 1])
    return top_label_calibration_error(labels, probs)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def run_clinical_training(cfg: ClinicalConfig, data_path: str | None, out_dir: Path, name: str,
                          command: str) -> tuple[Path, Path, dict]:
    """Train, save ``NAME.safetensors``, then evaluate and write the model card + figures and
    the patient split as ``train.csv``/``val.csv`` (+ ``test.csv``), the [data] of a
    model.toml."""
    torch.set_num_threads(cfg.threads)
    log_line(f"loading Kermany at {cfg.size} px ({', '.join(cfg.labelling.classes)}) ...")
    data = cfg.load(data_path)
    log_line(f"train {len(data.train)} images ({len(data.train_patients)} patients), val "
             f"{len(data.val)} ({len(data.val_patients)} patients), test {len(data.test)}")
    trained = train_clinical(cfg, data)
    cfg.temperature = trained.temperature
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = save_checkpoint(trained.model, trained.spec, out_dir / f"{name}.safetensors")
    training = {"config": asdict(cfg), "seconds": round(trained.seconds, 1),
                "epochs_run": trained.history["epochs_run"],
                "best_epoch": trained.history["best_epoch"],
                "best_val_auc": trained.history["best_val_auc"],
                "history": trained.history["history"], "command": command,
                "temperature": trained.temperature,
                "val_ece_before_temperature": trained.ece_before}
    (out_dir / f"{name}.training.json").write_text(json.dumps(training, indent=2) + "\n")
    log_line(f"wrote {checkpoint} (T = {trained.temperature:.3f}); evaluating")
    card_module = card_for(trained.spec)
    result = card_module.evaluate(trained.model, trained.spec, data, cfg.sensitivity)
    card = card_module.write_card(out_dir / f"{name}.json", checkpoint, trained.model,
                                  trained.spec, data, result, training)
    for path in write_split_csvs(open_kermany(data_path, cfg.labelling), out_dir,
                                 cfg.val_fraction, cfg.split_seed):
        log_line(f"wrote {path}")
    return checkpoint, card, result


def card_for(spec: ModelSpec):
    """The module that evaluates a Kermany checkpoint and writes its card:
    :mod:`converters.clinical_card` for two classes, :mod:`converters.classes_card` for more."""
    if len(spec.classes) == 2:
        from converters import clinical_card

        return clinical_card
    from converters import classes_card

    return classes_card


def cross_validate(cfg: ClinicalConfig, data_path: str | None, folds: int) -> dict:
    """Patient-grouped k-fold CV: train on k-1 folds, validation AUC on the held-out fold."""
    torch.set_num_threads(cfg.threads)
    aucs, best_epochs, seconds = [], [], []
    for k in range(folds):
        data = cfg.load(data_path, fold=(k, folds))
        log_line(f"fold {k + 1}/{folds}: train {len(data.train)}, val {len(data.val)} images")
        trained = train_clinical(cfg, data)
        auc = validation_auc(trained.model, data.val.images, data.val.labels, trained.spec)
        aucs.append(auc)
        best_epochs.append(trained.history["best_epoch"])
        seconds.append(round(trained.seconds, 1))
        log_line(f"fold {k + 1}/{folds}: val AUC {auc:.4f}")
    values = np.array(aucs)
    return {"folds": folds, "val_auc": aucs, "mean": float(values.mean()),
            "sd": float(values.std(ddof=1)), "best_epoch": best_epochs, "seconds": seconds,
            "config": asdict(cfg)}


def validation_run(cfg: ClinicalConfig, data_path: str | None) -> dict:
    """Train on the patient split and return the validation AUC only (for choosing a recipe)."""
    torch.set_num_threads(cfg.threads)
    data = cfg.load(data_path)
    trained = train_clinical(cfg, data)
    return {"size": cfg.size, "val_auc": trained.history["best_val_auc"],
            "best_epoch": trained.history["best_epoch"], "seconds": trained.seconds}
