"""A 3-class model config for the several-findings tests: normal / bacterial / viral pneumonia
from ``kermany_train_224``'s ``finding`` column, findings BACTERIAL and VIRAL.

The network is the kit's clinical CNN (``clinical_cnn``, 128 px) given by the config's
``factory`` with three outputs: the shipped clinical model's trained layers, and a new 3-class
classifier fitted here as a linear probe (examples/make_weights.py's ``fit_probe``) on training
X-rays (forward passes only: seconds). Its rows come from the clinical model's own patient split
(models/clinical/train.csv and val.csv): the probe and INT8 calibration read training patients;
validation and test are disjoint sets of the clinical model's validation patients (seeded).
Nothing is downloaded or committed; the build gates every artifact against this network's own
FP32 reference, so its absolute accuracy does not matter.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from converters.architectures import build_model
from tests.converters.model_configs import (
    CLINICAL_KWARGS,
    CLINICAL_WEIGHTS,
    REPO,
    toml_value,
)

LABELS = ("NORMAL", "BACTERIAL", "VIRAL")
FINDINGS = ("BACTERIAL", "VIRAL")
#: kermany_train_224/manifest.csv's ``finding`` values, as labels
FROM_FINDING = {"normal": "NORMAL", "bacteria": "BACTERIAL", "virus": "VIRAL"}
KWARGS = {**CLINICAL_KWARGS, "num_classes": 3, "temperature": 1.0}
SIZE = 128
#: images per label: training (the probe, INT8 calibration, the scope guard), validation (decides
#: every threshold and the gate), test (reported only)
PER_LABEL = {"train": 110, "val": 200, "test": 40}
#: where the training and validation rows come from: the clinical model's own patient split
#: (test rows: kermany_test_224, labelled by their file names, e.g. person1_virus_6.jpeg)
SIDES = {"train": "train.csv", "val": "val.csv"}
TEST_FOLDER = "kermany_test_224"


def _rows(images: Path, side: str) -> list[dict]:
    with (images / "manifest.csv").open(newline="") as handle:
        finding = {r["path"]: FROM_FINDING[r["finding"]] for r in csv.DictReader(handle)}
    with (REPO / "models" / "clinical" / side).open(newline="") as handle:
        return [{"path": r["path"], "label": finding[r["path"]], "patient": r["patient"]}
                for r in csv.DictReader(handle)]


def _test_rows(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("*/*.jpeg")):
        label = "NORMAL" if path.parent.name == "NORMAL" else \
            "VIRAL" if "_virus" in path.name else "BACTERIAL"
        rows.append({"path": f"{path.parent.name}/{path.name}", "label": label,
                     "patient": path.name.split("_")[0]})
    return rows


def split_rows(images: Path, seed: int = 0) -> dict[str, list[dict]]:
    """PER_LABEL images of each label per split; no patient in two splits (train and val: the
    clinical model's patient split; test: the test folder)."""
    rng = np.random.default_rng(seed)
    taken: dict[str, list[dict]] = {}
    for split, count in PER_LABEL.items():
        rows = _test_rows(images.parent / TEST_FOLDER) if split == "test" else \
            _rows(images, SIDES[split])
        patients = sorted({r["patient"] for r in rows})
        order = {p: i for i, p in enumerate(rng.permutation(patients))}
        rows.sort(key=lambda r: (order[r["patient"]], r["path"]))
        picked = []
        for label in LABELS:
            picked += [r for r in rows if r["label"] == label][:count]
        taken[split] = sorted(picked, key=lambda r: r["path"])
    return taken


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def fit_weights(rows: list[dict], images: Path, path: Path) -> Path:
    """The clinical model's layers with a 3-class classifier fitted on ``rows``; its state_dict
    at ``path``."""
    from safetensors.torch import load_file

    from converters.data.folder import decode_images
    from runtime.contract.manifest import Preprocessing
    from runtime.preprocess.cpu import normalize

    spec = Preprocessing(size=SIZE, crop="none", interpolation="area")
    inputs = normalize(decode_images(tuple(images / r["path"] for r in rows), spec), spec)
    labels = np.array([LABELS.index(r["label"]) for r in rows], dtype=np.int64)
    torch.manual_seed(0)
    model = build_model(**KWARGS)
    trained = {k: v for k, v in load_file(str(CLINICAL_WEIGHTS)).items()
               if not k.startswith("head.")}
    missing = model.load_state_dict(trained, strict=False).missing_keys
    assert sorted(missing) == ["head.2.bias", "head.2.weight"], missing
    model.eval()  # batch norm with its running statistics, as exported
    fit_head(model, inputs, labels)
    torch.save(model.state_dict(), path)
    return path


def fit_head(model: torch.nn.Module, inputs: np.ndarray, labels: np.ndarray,
             ridge: float = 1e-3) -> None:
    """Fit the classifier (multinomial logistic regression with a ridge penalty) on the pooled
    features of the frozen layers. On the raw features, not standardised ones: dividing by a
    small spread would make large weights, which multiply INT8's rounding of those features."""
    with torch.inference_mode():
        features = torch.cat([model.logits_and_features(torch.from_numpy(inputs[s:s + 64]))[1]
                              for s in range(0, len(inputs), 64)])
    last = features[:, -model.feature_widths[-1]:].clone()  # the classifier's input
    linear = model.head[2]
    target = torch.from_numpy(labels)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=300)

    def loss_of() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(last), target) + \
            ridge * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(loss_of)


def write_config(folder: Path, data_dir: Path, sensitivity: float | dict = 0.95) -> Path:
    """``folder/model.toml`` with its weights and CSVs: the 3-class model on real X-rays."""
    images = data_dir / "kermany_train_224"
    splits = split_rows(images)
    csvs = {split: write_csv(folder / f"{split}.csv", rows) for split, rows in splits.items()}
    weights = fit_weights(splits["train"], images, folder / "three_class.pt")
    folders = {"val": images, "train": images, "test": data_dir / TEST_FOLDER}
    data = "\n".join(f'{split} = {{ csv = "{csvs[split].name}", images = "{folders[split]}" }}'
                     for split in ("val", "test", "train"))
    text = f"""name = "pneumonia-type-test"

[network]
factory = "converters.architectures:build_model"
kwargs = {toml_value(KWARGS)}
weights = "{weights.name}"

[input]
channels = 1
size = {SIZE}
crop = "none"
interpolation = "area"
scale = {1 / 255!r}
mean = [0.5]
std = [0.5]

[output]
kind = "logits"
task = "multiclass"
labels = {toml_value(list(LABELS))}
findings = {toml_value(list(FINDINGS))}
sensitivity = {toml_value(sensitivity)}

[population]
age_years = [1, 5]

[data]
{data}
"""
    config = folder / "model.toml"
    config.write_text(text)
    return config
