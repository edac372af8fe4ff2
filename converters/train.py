"""Training the reference pneumonia model on PneumoniaMNIST (28x28), with its model card.

Deterministic for a seed on a given machine, with on-the-fly augmentation (small affine jitter,
brightness/contrast), class-weighted loss, cosine learning rate and early stopping on validation AUC.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from converters.architectures import build_model, count_flops, count_parameters
from converters.checkpoint import ModelSpec, save_checkpoint
from converters.data.pneumoniamnist import PneumoniaMNIST, load_pneumoniamnist
from evaluation.metrics import binary_metrics, macro_auc, roc_auc, threshold_for_sensitivity
from runtime.bundle.hashing import sha256_file
from runtime.contract.manifest import Preprocessing
from runtime.preprocess.cpu import normalize

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "models" / "reference"
REFERENCE_CHECKPOINT = REFERENCE_DIR / "pneumonia_cnn.safetensors"
CPU = torch.device("cpu")  # where predictions are made unless told otherwise


@dataclass
class TrainConfig:
    """Every knob of a training run (all recorded in the model card)."""

    architecture: str = "pneumonia_cnn"
    width: int = 16
    dropout: float = 0.2
    epochs: int = 40
    patience: int = 12
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    rotate_deg: float = 10.0
    translate: float = 0.08
    scale: float = 0.10
    brightness: float = 0.10
    contrast: float = 0.15
    gamma: float = 0.0  # >0: gamma drawn log-uniformly in [1/(1+g), 1+g] (exposure)
    lowres: float = 0.0  # probability that a batch's chosen images are blurred by down/upscaling
    lowres_min: float = 0.25  # smallest down-scaling factor for ``lowres``
    erase: float = 0.0  # probability that an image gets one random rectangle erased (cutout)
    sensitivity: float = 0.98
    members: int = 3  # >1: an ensemble of independently seeded models, averaged in one graph
    seed: int = 0
    threads: int = 2
    device: str = "auto"

    def member_config(self) -> dict:
        return {"width": self.width, "dropout": self.dropout, "num_classes": 2}

    def preprocessing(self) -> Preprocessing:
        """The pixels the model is trained on (the contract its checkpoint records)."""
        return Preprocessing(size=28)

    def model_name(self) -> str:
        return f"pneumonia-cnn-x{self.members}" if self.members > 1 else "pneumonia-cnn"

    def spec(self) -> ModelSpec:
        """The checkpoint spec: one architecture, or an ensemble of ``members`` of it."""
        if self.members == 1:
            return ModelSpec(self.architecture, self.member_config(), self.preprocessing(),
                             name=self.model_name())
        member = {"architecture": self.architecture, "config": self.member_config()}
        return ModelSpec("ensemble", {"members": [member] * self.members, "num_classes": 2},
                         self.preprocessing(), name=self.model_name())


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def augment(batch: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random affine (rotation, scale, shift) and brightness/contrast, batched on the device; and
    when ``cfg`` asks for them, gamma, low-resolution blur and cutout (each draws random numbers
    only when on, so recipes without them keep their random stream)."""
    n = batch.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * (high - low) + low).to(batch.device)

    angle = uniform(-cfg.rotate_deg, cfg.rotate_deg) * math.pi / 180.0
    zoom = uniform(1.0 - cfg.scale, 1.0 + cfg.scale)
    tx, ty = uniform(-cfg.translate, cfg.translate), uniform(-cfg.translate, cfg.translate)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.gamma > 0:
        out = _random_gamma(out, uniform(-1.0, 1.0) * math.log1p(cfg.gamma))
    if cfg.lowres > 0:
        out = _random_lowres(out, cfg, gen)
    gain = uniform(1.0 - cfg.contrast, 1.0 + cfg.contrast).view(n, 1, 1, 1)
    shift = uniform(-cfg.brightness, cfg.brightness).view(n, 1, 1, 1) * 2.0  # inputs span [-1, 1]
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * gain + mean + shift
    if cfg.erase > 0:
        out = _random_erase(out, cfg.erase, gen)
    return out


def _random_gamma(batch: torch.Tensor, log_gamma: torch.Tensor) -> torch.Tensor:
    """Per-image gamma on inputs standardised to [-1, 1] (an over- or under-exposed film)."""
    unit = ((batch + 1.0) / 2.0).clamp(0.0, 1.0)
    return unit.pow(torch.exp(log_gamma).view(-1, 1, 1, 1)) * 2.0 - 1.0


def _random_lowres(batch: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """A random share ``cfg.lowres`` of the batch, area-downscaled by one factor drawn in
    [``lowres_min``, 1] and scaled back up: a softer or smaller original."""
    n, _, height, width = batch.shape
    chosen = (torch.rand(n, generator=gen) < cfg.lowres).to(batch.device).view(n, 1, 1, 1)
    factor = float(torch.rand(1, generator=gen)) * (1.0 - cfg.lowres_min) + cfg.lowres_min
    small = (max(2, round(height * factor)), max(2, round(width * factor)))
    soft = F.interpolate(F.interpolate(batch, size=small, mode="area"), size=(height, width),
                         mode="bilinear", align_corners=False)
    return torch.where(chosen, soft, batch)


def _random_erase(batch: torch.Tensor, probability: float, gen: torch.Generator) -> torch.Tensor:
    """Cutout: with ``probability``, one rectangle (2-15% of the image, aspect 1:3 to 3:1) per
    image set to that image's mean, so no single region (a marker, a corner) decides the call."""
    n, _, height, width = batch.shape
    draws = torch.rand(n, 5, generator=gen)
    area = (0.02 + draws[:, 1] * 0.13) * height * width
    aspect = torch.exp((draws[:, 2] * 2.0 - 1.0) * math.log(3.0))
    box_h = (area * aspect).sqrt().clamp(1, height)
    box_w = (area / aspect).sqrt().clamp(1, width)
    top = draws[:, 3] * (height - box_h)
    left = draws[:, 4] * (width - box_w)
    rows = torch.arange(height).view(1, height, 1)
    cols = torch.arange(width).view(1, 1, width)
    inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + box_h).view(n, 1, 1))
              & (cols >= left.view(n, 1, 1)) & (cols < (left + box_w).view(n, 1, 1)))
    mask = (inside & (draws[:, 0] < probability).view(n, 1, 1)).unsqueeze(1).to(batch.device)
    return torch.where(mask, batch.mean(dim=(1, 2, 3), keepdim=True), batch)


@torch.no_grad()
def predict_probabilities(model: nn.Module, images: np.ndarray, spec: ModelSpec,
                          device: torch.device = CPU, batch_size: int = 256
                          ) -> np.ndarray:
    """(N, C) float32 class probabilities (softmax) for (N, H, W) uint8 images at model
    resolution."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(normalize(images[start:start + batch_size], spec.preprocessing))
        out.append(torch.softmax(model(x.to(device)).float(), 1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(spec.classes)), np.float32)


def predict_positive(model: nn.Module, images: np.ndarray, spec: ModelSpec,
                     device: torch.device = CPU, batch_size: int = 256) -> np.ndarray:
    """Probability of the positive class for (N, H, W) uint8 images at model resolution."""
    return predict_probabilities(model, images, spec, device, batch_size)[:, spec.positive_index]


def validation_auc(model: nn.Module, images: np.ndarray, labels: np.ndarray, spec: ModelSpec,
                   device: torch.device = CPU) -> float:
    """What early stopping keeps the best of: the positive class's AUC (a two-class model), or
    the mean one-vs-rest AUC over the classes (:func:`evaluation.metrics.macro_auc`)."""
    if spec.config.get("num_classes", 2) == 2:
        return roc_auc(labels, predict_positive(model, images, spec, device))
    return macro_auc(labels, predict_probabilities(model, images, spec, device))


def evaluate_model(model: nn.Module, spec: ModelSpec, data: PneumoniaMNIST, sensitivity: float,
                   device: torch.device = CPU) -> dict:
    """Threshold chosen on val for ``sensitivity``; metrics on val and test at that threshold."""
    val_p = predict_positive(model, data.val.images, spec, device)
    threshold = threshold_for_sensitivity(data.val.labels, val_p, sensitivity)
    test_p = predict_positive(model, data.test.images, spec, device)
    return {"threshold": threshold,
            "val": binary_metrics(data.val.labels, val_p, threshold).as_dict(),
            "test": binary_metrics(data.test.labels, test_p, threshold).as_dict()}


def train_model(cfg: TrainConfig, data: PneumoniaMNIST, progress: bool = True
                ) -> tuple[nn.Module, ModelSpec, dict]:
    """Train the model ``cfg`` describes (each ensemble member with its own seed)."""
    spec = cfg.spec()
    if cfg.members == 1:
        model, history = train_member(cfg, data, cfg.seed, progress)
        return model, spec, history
    model = build_model(spec.architecture, **spec.config)
    histories = []
    for index, member in enumerate(model.members):
        if progress:
            print(f"member {index + 1}/{cfg.members} (seed {cfg.seed + index})", file=sys.stderr)
        trained, history = train_member(cfg, data, cfg.seed + index, progress)
        member.load_state_dict(trained.state_dict())
        histories.append(history)
    model.eval()
    return model, spec, {"epochs_run": sum(h["epochs_run"] for h in histories),
                         "best_epoch": [h["best_epoch"] for h in histories],
                         "best_val_auc": roc_auc(data.val.labels,
                                                 predict_positive(model, data.val.images, spec)),
                         "members": histories}


def train_member(cfg: TrainConfig, data: PneumoniaMNIST, seed: int, progress: bool = True,
                 epoch_log: Callable[[dict], None] | None = None) -> tuple[nn.Module, dict]:
    """Train one network; return it with its best-validation-AUC weights (mean one-vs-rest AUC
    for more than two classes: :func:`validation_auc`), and the history.

    ``data`` is anything with ``train`` and ``val``
    :class:`~converters.data.labelled.LabelledImages` at the size ``cfg.preprocessing()``
    declares (PneumoniaMNIST, or the Kermany patient split).
    """
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    gen = torch.Generator().manual_seed(seed)
    spec = ModelSpec(cfg.architecture, cfg.member_config(), cfg.preprocessing())
    model = build_model(cfg.architecture, **spec.config).to(device)

    x_train = torch.from_numpy(normalize(data.train.images, spec.preprocessing))
    y_train = torch.from_numpy(data.train.labels)
    classes = spec.config.get("num_classes", 2)
    counts = torch.bincount(y_train, minlength=classes).float()
    class_weight = (counts.sum() / (float(classes) * counts)).to(device)
    criterion = nn.CrossEntropyLoss(weight=class_weight, label_smoothing=cfg.label_smoothing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(y_train) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=0.15)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    best_auc, best_state, best_epoch, history = -1.0, None, 0, []
    bar = tqdm(range(cfg.epochs), desc="training", unit="epoch", disable=not progress,
               file=sys.stderr)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(y_train), generator=gen)
        total_loss = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            xb = augment(x_train[idx].to(device), cfg, gen)
            yb = y_train[idx].to(device)
            with torch.autocast(device.type, enabled=use_amp):
                loss = criterion(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total_loss += loss.item() * len(idx)
        val_auc = validation_auc(model, data.val.images, data.val.labels, spec, device)
        history.append({"epoch": epoch + 1, "loss": total_loss / len(order), "val_auc": val_auc})
        if val_auc > best_auc:
            best_auc, best_epoch = val_auc, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f"{total_loss / len(order):.4f}", val_auc=f"{val_auc:.4f}",
                        best=f"{best_auc:.4f}@{best_epoch}")
        if epoch_log is not None:
            epoch_log(history[-1])
        if epoch + 1 - best_epoch >= cfg.patience:
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval().cpu()
    return model, {"epochs_run": len(history), "best_epoch": best_epoch,
                   "best_val_auc": best_auc, "history": history}


def library_versions() -> dict[str, str]:
    import numpy

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "platform": platform.platform()}


def card_basics(spec: ModelSpec, model: nn.Module, checkpoint: Path) -> dict:
    """What every model card starts with: the model, its size and cost, its input contract and
    the checkpoint file it describes."""
    flops = count_flops(model, spec.input_shape)
    return {
        "name": spec.name,
        "architecture": spec.architecture,
        "config": spec.config,
        "parameters": count_parameters(model),
        "macs_per_image": flops // 2,
        "flops_per_image": flops,
        "input": {"name": "image", "shape": [-1, *spec.input_shape], "dtype": "float32"},
        "classes": list(spec.classes),
        "positive_class": spec.positive_class,
        "preprocessing": spec.preprocessing.as_dict(),
        "checkpoint": {"file": checkpoint.name, "sha256": sha256_file(checkpoint),
                       "bytes": checkpoint.stat().st_size},
    }


def write_model_card(path: Path, checkpoint: Path, model: nn.Module, spec: ModelSpec,
                     cfg: TrainConfig, data: PneumoniaMNIST, result: dict, history: dict,
                     seconds: float, command: str) -> Path:
    """The model card: architecture, preprocessing contract, data checksum, metrics, recipe."""
    card = {
        **card_basics(spec, model, checkpoint),
        "data": {"file": data.path.name, "md5": data.md5,
                 "splits": {s: len(data.split(s)) for s in ("train", "val", "test")}},
        "threshold": {"value": result["threshold"], "chosen_on": "val",
                      "target_sensitivity": cfg.sensitivity},
        "metrics": {"val": result["val"], "test": result["test"]},
        "training": {"config": asdict(cfg), "seconds": round(seconds, 1),
                     "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
                     "best_val_auc": history["best_val_auc"], "command": command,
                     "versions": library_versions()},
    }
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def run_training(cfg: TrainConfig, data_path: str | None, out_dir: Path, name: str,
                 command: str, progress: bool = True) -> tuple[Path, Path, dict]:
    """Train, evaluate, write ``NAME.safetensors`` and ``NAME.json`` in ``out_dir``."""
    data = load_pneumoniamnist(data_path)
    started = time.perf_counter()
    model, spec, history = train_model(cfg, data, progress)
    seconds = time.perf_counter() - started
    result = evaluate_model(model, spec, data, cfg.sensitivity)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = save_checkpoint(model, spec, out_dir / f"{name}.safetensors")
    card = write_model_card(out_dir / f"{name}.json", checkpoint, model, spec, cfg, data, result,
                            history, seconds, command)
    return checkpoint, card, result
