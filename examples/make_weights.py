"""Write the examples' networks (never committed: large, and not clinical models).

``python examples/make_weights.py OUT [NAME ...]`` writes ``OUT/<example>/``: a copy of the
example's ``model.toml`` and the weights file it names. Each network's layers are random (seeded);
then, on ``--probe-images`` training X-rays from ``kermany_train_224`` (stratified, seeded), their
batch-norm statistics are measured, their classifier (the last linear layer) is fitted as a
linear probe, and every layer is trained for ``--epochs`` short epochs, so that the answers are
better than chance and INT8 quantizes them as it would a trained network's. Nothing is
downloaded. These weights prove conversion, pixels and outputs, not clinical figures.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tomllib
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the kit, run from anywhere
from converters.config.vision_libraries import import_vision

HERE = Path(__file__).resolve().parent
PROBE_IMAGES = 400
PROBE_SEED = 0
FINE_TUNE_EPOCHS = 2


def densenet121() -> tuple[nn.Module, nn.Linear]:
    """torchvision DenseNet-121, two classes."""
    model = import_vision("torchvision.models").densenet121(weights=None, num_classes=2)
    return model, model.classifier


def resnet18_64() -> tuple[nn.Module, nn.Linear]:
    """torchvision ResNet-18 with one output (a binary model)."""
    model = import_vision("torchvision.models").resnet18(weights=None, num_classes=1)
    return model, model.fc


def timm_mobilenetv3() -> tuple[nn.Module, nn.Linear]:
    """timm MobileNetV3-Small, two classes."""
    model = import_vision("timm").create_model("mobilenetv3_small_100", pretrained=False,
                                               num_classes=2)
    return model, model.get_classifier()


def onnx_resnet18() -> tuple[nn.Module, nn.Linear]:
    """torchvision ResNet-18, two classes, shipped as an ONNX file (:func:`export_onnx`)."""
    model = import_vision("torchvision.models").resnet18(weights=None, num_classes=2)
    return model, model.fc


def torchxrayvision_densenet() -> tuple[nn.Module, nn.Linear]:
    """TorchXRayVision's DenseNet-121 (18 pathologies, one channel), without its weights."""
    model = import_vision("torchxrayvision").models.DenseNet(weights=None)
    return model, model.classifier


def export_onnx(model: nn.Module, path: Path) -> None:
    """What a user's own export script does: a plain ``torch.onnx.export`` with a dynamic batch."""
    model.eval()
    example = torch.zeros(1, 3, 96, 96)
    torch.onnx.export(model, (example,), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"},
                                                             "logits": {0: "batch"}},
                      dynamo=False)


def save_torch(model: nn.Module, path: Path) -> None:
    torch.save(model.state_dict(), path)


def save_safetensors(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


#: each example's folder under examples/: its network (and classifier layer), and how it is saved
EXAMPLES: dict[str, tuple[Callable[[], tuple[nn.Module, nn.Linear]],
                          Callable[[nn.Module, Path], None]]] = {
    "densenet121": (densenet121, save_torch),
    "resnet18_64": (resnet18_64, save_torch),
    "timm_mobilenetv3": (timm_mobilenetv3, save_safetensors),
    "onnx_resnet18": (onnx_resnet18, export_onnx),
    "torchxrayvision_densenet": (torchxrayvision_densenet, save_torch),
}
#: a multilabel example's labelled images: NIH ChestX-ray14's in adult_cxr/ (one per patient),
#: split by a seeded shuffle into these many validation and test images; the rest train
NIH_SPLIT = {"val": 200, "test": 100}
NO_FINDING = "No Finding"


def probe_set(config_path: Path, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` training X-rays (stratified by label, seeded) as the config's model input, and
    their labels (1 = the config's finding)."""
    from converters.config.for_build import preprocessing_of
    from converters.config.model import load_config
    from converters.data.folder import decode_images
    from runtime.preprocess.cpu import normalize

    config = load_config(config_path)
    folder = _data_folder() / "kermany_train_224"
    with (folder / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = np.random.default_rng(seed)
    finding = config.output.findings[0]
    picked = []
    for positive in (False, True):
        members = [r for r in rows if (r["label"] == finding) == positive]
        take = rng.choice(len(members), size=min(count // 2, len(members)), replace=False)
        picked += [members[i] for i in sorted(take)]
    spec = preprocessing_of(config)
    images = decode_images(tuple(folder / r["path"] for r in picked), spec)
    labels = np.array([r["label"] == finding for r in picked], dtype=np.int64)
    return normalize(images, spec), labels


def write_nih_csvs(folder: Path, labels: tuple[str, ...], seed: int = 0) -> dict[str, Path]:
    """``val.csv``, ``test.csv`` and ``train.csv`` in ``folder``: adult_cxr/'s NIH images with
    their findings as a multilabel ``label`` cell (joined by ``|``; empty for "No Finding"),
    paths relative to adult_cxr/ (findings the model has no label for are left out)."""
    source = _data_folder() / "adult_cxr"
    with (source / "manifest.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["path"].startswith("nih/")]
    order = np.random.default_rng(seed).permutation(len(rows))
    written, start = {}, 0
    for split in ("val", "test", "train"):
        count = NIH_SPLIT.get(split, len(rows) - start)
        path = folder / f"{split}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "patient"])
            for i in sorted(order[start:start + count]):
                found = [f for f in rows[i]["finding"].split("|") if f in labels]
                writer.writerow([rows[i]["path"], "|".join(found), rows[i]["patient"]])
        written[split], start = path, start + count
    return written


def _data_folder() -> Path:
    return Path(os.environ.get("CXR_DATA_DIR", HERE.parent.parent / "shared" / "data"))


def xray_inputs(config_path: Path, csv_path: Path, count: int) -> np.ndarray:
    """The first ``count`` X-rays of a written CSV as the config's model input."""
    from converters.config.for_build import preprocessing_of
    from converters.config.model import load_config
    from converters.data.folder import decode_images
    from runtime.preprocess.cpu import normalize

    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:count]
    spec = preprocessing_of(load_config(config_path))
    images = decode_images(tuple(_data_folder() / "adult_cxr" / r["path"] for r in rows), spec)
    return normalize(images, spec)


def recalibrate_batch_norm(model: nn.Module, inputs: np.ndarray) -> None:
    """Set every batch norm's running statistics to those of ``inputs`` (forward passes in
    training mode, nothing else learned): a random network's activations then keep their scale
    through its depth, as a trained one's do, and INT8 quantizes it as it would a trained one."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
    model.train()
    with torch.no_grad():
        for start in range(0, len(inputs), 32):
            model(torch.from_numpy(inputs[start:start + 32]))
    model.eval()


def fit_probe(model: nn.Module, head: nn.Linear, inputs: np.ndarray, labels: np.ndarray) -> None:
    """Fit ``head`` (ridge-penalised logistic regression on its input features, standardised,
    then folded into its weights) with the rest of ``model`` frozen."""
    features: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, args, _out: features.append(args[0].detach()))
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(inputs), 32):
            model(torch.from_numpy(inputs[start:start + 32]))
    hook.remove()
    x = torch.cat(features).flatten(1)
    mean, std = x.mean(0), x.std(0)
    std = std.clamp_min(0.1 * float(std.mean()))  # a near-constant feature gets no large weight
    z = ((x - mean) / std).clone()
    y = torch.from_numpy(labels)
    linear = nn.Linear(z.shape[1], head.out_features)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=200)

    def loss_of() -> torch.Tensor:
        optimizer.zero_grad()
        out = linear(z)
        loss = (nn.functional.binary_cross_entropy_with_logits(out[:, 0], y.float())
                if head.out_features == 1 else nn.functional.cross_entropy(out, y))
        loss = loss + 0.1 * linear.weight.pow(2).sum()  # ridge: many features, few images
        loss.backward()
        return loss

    optimizer.step(loss_of)
    with torch.no_grad():  # w.(x - mean)/std + b  ==  (w/std).x + (b - w.mean/std)
        head.weight.copy_(linear.weight / std)
        head.bias.copy_(linear.bias - (linear.weight * mean / std).sum(1))


def fine_tune(model: nn.Module, inputs: np.ndarray, labels: np.ndarray, epochs: int) -> None:
    """A few epochs of every layer on the probe images (Adam, small steps, seeded order): the
    features become the X-rays' own, so that INT8's rounding moves the answers as little as it
    moves a trained network's (a probe on random features needs large weights, which amplify it)."""
    binary = model(torch.from_numpy(inputs[:1])).shape[1] == 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    order = np.random.default_rng(PROBE_SEED)
    model.train()
    for _epoch in range(epochs):
        for batch in np.array_split(order.permutation(len(inputs)), max(1, len(inputs) // 32)):
            x, y = torch.from_numpy(inputs[batch]), torch.from_numpy(labels[batch])
            out = model(x)
            loss = (nn.functional.binary_cross_entropy_with_logits(out[:, 0], y.float())
                    if binary else nn.functional.cross_entropy(out, y))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def make(out: Path, names: list[str] | None = None, probe_images: int = PROBE_IMAGES,
         epochs: int = FINE_TUNE_EPOCHS) -> list[Path]:
    """Write each example (default: all) into ``out``; the configs written."""
    configs = []
    for name in names or list(EXAMPLES):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        config = Path(shutil.copy(HERE / name / "model.toml", folder / "model.toml"))
        network = tomllib.loads(config.read_text())["network"]
        weights = folder / network.get("weights", network.get("onnx", ""))
        build, save = EXAMPLES[name]
        torch.manual_seed(0)
        model, head = build()
        save(model, weights)  # the config names this file: it must exist to be read
        if tomllib.loads(config.read_text())["output"]["task"] == "multilabel":
            # labelled CSVs of its own (NIH findings); batch norm measured on training X-rays,
            # the classifier left random (no single finding to fit a probe for)
            labels = tuple(tomllib.loads(config.read_text())["output"]["labels"])
            csvs = write_nih_csvs(folder, labels)
            if probe_images:
                recalibrate_batch_norm(model, xray_inputs(config, csvs["train"], probe_images))
                save(model, weights)
        elif probe_images:
            inputs, labels = probe_set(config, probe_images, PROBE_SEED)
            recalibrate_batch_norm(model, inputs)
            fit_probe(model, head, inputs, labels)
            fine_tune(model, inputs, labels, epochs)
            save(model, weights)
        configs.append(config)
    return configs


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python examples/make_weights.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write <example>/ into")
    parser.add_argument("names", nargs="*", choices=[[], *EXAMPLES], metavar="NAME",
                        help=f"examples to write (default: all): {', '.join(EXAMPLES)}")
    parser.add_argument("--probe-images", type=int, default=PROBE_IMAGES, metavar="N",
                        help=f"training X-rays the classifier is fitted on (default "
                             f"{PROBE_IMAGES}; 0: every layer random). Reads "
                             "$CXR_DATA_DIR/kermany_train_224")
    parser.add_argument("--epochs", type=int, default=FINE_TUNE_EPOCHS, metavar="N",
                        help=f"epochs of every layer on those X-rays after the probe (default "
                             f"{FINE_TUNE_EPOCHS}; 0: only the classifier is fitted)")
    args = parser.parse_args(argv)
    for config in make(args.out, args.names or None, args.probe_images, args.epochs):
        print(f"wrote {config.parent}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
