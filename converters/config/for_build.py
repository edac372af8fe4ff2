"""A model config made into what ``converters build`` works on: a PyTorch network whose output is
class probabilities, the model's spec, and its labelled images at the model's pixels.

The build itself knows nothing of configs: :func:`build_inputs` returns the same
:class:`~converters.checkpoint.LoadedCheckpoint` and
:class:`~converters.data.sets.EvaluationSets` a kit checkpoint gives, so every step (export,
conversion, gate, bundle) is the one the reference models go through. Several findings and
multilabel models are carried (:mod:`converters.findings`), and so are a non-square input and
timm's ``center`` crop (:meth:`runtime.contract.manifest.Preprocessing.crop_box`). An ONNX network is prepared, not exported (:mod:`converters.config.onnx_source`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.checkpoint import LoadedCheckpoint, ModelSpec
from converters.config.data import Listing, read_source
from converters.config.features import FeatureTap, with_scope_features
from converters.config.model import Data, DataSource, ModelConfig, Output
from converters.config.network import (
    OnnxNetwork,
    check_runs,
    describe_builder,
    load_network,
)
from converters.config.tables import ConfigError
from converters.data.folder import decode_images
from converters.data.labelled import DatasetError, LabelledImages
from converters.data.sets import Dataset, EvaluationSets
from runtime.bundle.hashing import sha256_file
from runtime.contract import manifest as contract
from runtime.contract.manifest import Preprocessing

log = logging.getLogger(__name__)

#: how far from 1 a row of "logits" may sum and still look like probabilities (the build warns)
LOOKS_LIKE_PROBABILITIES = 1e-3


class ProbabilityHead(nn.Module):
    """The config's network with its declared output made into the probabilities (N, C) the
    bundle ships: a binary model's one output becomes [1 - p, p] (sigmoid first when it gives a
    logit); a multilabel model's logits get a sigmoid per column (one independent probability
    per label); a model that gives probabilities is passed through (no second softmax or
    sigmoid)."""

    returns_probabilities = True  # read by converters.architectures.to_probabilities

    def __init__(self, network: nn.Module, output: Output):
        super().__init__()
        self.network, self.kind, self.task = network, output.kind, output.task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.network(x)
        y = y[0] if isinstance(y, (tuple, list)) else y
        if self.kind == "probabilities":
            p = y
        elif self.task == "multiclass":
            return torch.softmax(y, dim=1)
        else:  # binary and multilabel logits: one sigmoid per output
            p = torch.sigmoid(y)
        return torch.cat([1 - p, p], dim=1) if self.task == "binary" else p


def classifier_of(network: nn.Module, output: Output) -> nn.Module:
    """What the build exports: a multiclass logits network as it is (the kit adds the softmax,
    and keeps the scope features of a network that offers them), anything else in a
    :class:`ProbabilityHead`."""
    if output.task == "multiclass" and output.kind == "logits":
        return network
    return ProbabilityHead(network, output)


def preprocessing_of(config: ModelConfig) -> Preprocessing:
    """The bundle's preprocessing contract for the config's ``[input]``."""
    given = config.input
    return Preprocessing(size=given.size, crop=given.crop, interpolation=given.interpolation,
                         scale=given.scale, mean=given.mean, std=given.std,
                         channels=given.channels, crop_fraction=given.crop_fraction)


def check_buildable(config: ModelConfig) -> None:
    """Refuse, naming the key, what the bundle contract cannot carry yet."""
    if config.population.age_years is None:
        raise ConfigError("[population] age_years: needed to build a bundle (the scope rules "
                          "refuse a DICOM whose PatientAge is outside it); e.g. age_years = "
                          "[18, 100] for adults")
    if config.data.test is None:
        log.info("[data] test not given: the bundle reports no test figures")
    preprocessing_of(config)


@dataclass(frozen=True)
class ConfigSplits:
    """A config's ``[data]`` (or its ``[data.files]``: ``data``) as the build's
    :class:`~converters.data.labelled.Splits`: each image's class index into ``[output] labels``
    (multilabel: one 0/1 per label), which is what scoring every finding against the rest needs
    (:class:`converters.findings.Findings`)."""

    config: ModelConfig
    data: Data

    @property
    def location(self) -> str:
        return str(self._source("val").path)

    @property
    def folder(self) -> Path:
        return self.config.folder

    @property
    def train_name(self) -> str:
        """The training images' name: a CSV's image folder, else the file or folder."""
        train = self.data.train
        if train is None:
            return ""
        return (train.images or train.path).name if train.kind == "csv" else train.path.name

    @property
    def md5(self) -> str:
        """md5 over each split's definition: a CSV's or npz's bytes, a class folder's file list
        (relative path, label, size)."""
        digest = hashlib.md5()
        for split in ("val", "test", "train"):
            source = getattr(self.data, split)
            if source is not None:
                digest.update(f"{split}:{_definition_md5(source, self.config.output)}\n".encode())
        return digest.hexdigest()

    def _source(self, which: str) -> DataSource:
        source = getattr(self.data, which)
        where = "[data]" if self.data is self.config.data else "[data.files]"
        if source is None:
            need = {"test": "test figures", "train": "INT8 calibration (at least 300 images) "
                                                     "and the scope guard's reference"}[which]
            raise DatasetError(f"{where} {which}: not given in {self.config.path}; {need} read "
                               f"the training images: add {which} = \"FOLDER\" or a CSV")
        return source

    def split_at(self, which: str, spec: Preprocessing) -> LabelledImages:
        source = self._source(which)
        try:
            where = "[data]" if self.data is self.config.data else "[data.files]"
            listing = read_source(source, self.config.output, f"{where} {which}")
        except ConfigError as exc:
            raise DatasetError(str(exc)) from exc
        images = _images(listing, which, spec)
        return LabelledImages(images, listing.targets.astype(np.int64),
                              f"{source.path} ({len(listing)} images)",
                              self.config.output.labels, listing.patients, spec)


def _images(listing: Listing, which: str, spec: Preprocessing) -> np.ndarray:
    if listing.paths is not None:
        return decode_images(listing.paths, spec)
    from runtime.preprocess.cpu import is_model_pixels, to_model_pixels

    with np.load(listing.source.path, allow_pickle=False) as npz:
        stored = npz[f"{listing.source.split}_images"]
    if stored.ndim != 3 or stored.dtype != np.uint8:
        raise DatasetError(f"[data] {which}: {listing.source.path} images are {stored.dtype} "
                           f"{stored.shape}; expected (N, H, W) uint8 grayscale")
    if is_model_pixels(stored.shape, spec):
        return stored
    return np.stack([to_model_pixels(image, spec) for image in stored])


def _definition_md5(source: DataSource, output: Output) -> str:
    if source.kind in ("csv", "npz"):
        return hashlib.md5(source.path.read_bytes()).hexdigest()
    listing = read_source(source, output)
    lines = [f"{p.relative_to(source.path)},{output.labels[t]},{p.stat().st_size}"
             for p, t in zip(listing.paths or (), listing.targets)]
    return hashlib.md5("\n".join(lines).encode()).hexdigest()


def population_of(config: ModelConfig) -> contract.Population:
    """The manifest's population (:func:`check_buildable` made sure the ages are declared)."""
    given = config.population
    low, high = given.age_years
    words = given.description or f"patients aged {low:g}–{high:g}"
    return contract.Population(words, low, high)


def warn_if_probabilities(classifier: nn.Module, config: ModelConfig, inputs: np.ndarray) -> str | None:
    """A warning when a network declared as giving logits returns what already looks like
    probabilities: rows that are non-negative and sum to one (multiclass: a second softmax would
    shrink them), or every value within [0, 1] (multilabel and binary: a second sigmoid would
    squeeze them into [0.5, 0.73])."""
    out = config.output
    if out.kind != "logits" or not len(inputs):
        return None
    if isinstance(classifier, FeatureTap):
        classifier = classifier.classifier  # the scope features' wrapper: what it wraps
    if isinstance(classifier, ProbabilityHead):
        network = classifier.network  # the config's own output, not the kit's head
    elif getattr(classifier, "returns_probabilities", False):
        return None  # an ONNX network: the kit's head is inside the graph, its input unseen
    else:
        network = classifier
    with torch.inference_mode():
        raw = network(torch.from_numpy(inputs[:16]))
    raw = (raw[0] if isinstance(raw, (tuple, list)) else raw).numpy()
    if out.task == "multiclass":
        if (raw >= 0).all() and np.abs(raw.sum(axis=1) - 1).max() < LOOKS_LIKE_PROBABILITIES:
            return ("[output] kind = \"logits\", but the network's outputs are non-negative and "
                    "sum to one, like probabilities: if it ends in a softmax, set kind = "
                    "\"probabilities\", or its probabilities get a second softmax and shrink "
                    f"towards 1/{len(out.labels)}")
        return None
    if (raw >= 0).all() and (raw <= 1).all():
        return ("[output] kind = \"logits\", but every output of the network lies in [0, 1], "
                "like probabilities: if it ends in a sigmoid, set kind = \"probabilities\", or "
                "its probabilities get a second sigmoid and are squeezed into [0.5, 0.73]")
    return None


def build_inputs(config: ModelConfig, work_dir: Path, trust_pickle: bool = False,
                 calibration_count: int = 512, seed: int = 0
                 ) -> tuple[LoadedCheckpoint, EvaluationSets]:
    """The network (probabilities out) with its spec, and its evaluation sets; ``work_dir``
    gets the prepared graph of an ONNX network."""
    check_buildable(config)
    network = load_network(config, trust_pickle)
    check_runs(network, config)
    if isinstance(network, OnnxNetwork):
        from converters.config.onnx_source import OnnxClassifier, prepare_onnx_network

        classifier: nn.Module = OnnxClassifier(*prepare_onnx_network(config,
                                                                      work_dir / "network.onnx"))
        no_features = classifier.no_scope_features
    else:
        classifier, no_features = with_scope_features(classifier_of(network, config.output),
                                                      config)
    spec = ModelSpec(architecture=_architecture(config), config=_jsonable(config.network.kwargs),
                     preprocessing=preprocessing_of(config), classes=config.output.labels,
                     positive_class=config.output.findings[0], name=config.name,
                     dataset="config", findings=config.output.findings,
                     task=contract_task(config.output),
                     sensitivity=dict(config.output.sensitivity))
    identity = config.network.weights or config.network.file or config.path
    loaded = LoadedCheckpoint(model=classifier, spec=spec, path=identity,
                              sha256=sha256_file(identity), no_scope_features=no_features)
    return loaded, config_evaluation_sets(config, spec.preprocessing, calibration_count, seed)


def config_evaluation_sets(config: ModelConfig, spec: Preprocessing, calibration_count: int = 0,
                           seed: int = 0) -> EvaluationSets:
    """The config's ``[data]`` as the build's evaluation sets, in ``spec``'s pixels (the
    benchmarks read a config bundle's test images through it too)."""
    files = config.data.files
    own = ConfigSplits(config, config.data)
    dataset = Dataset(open=lambda _data: own, population=population_of(config),
                      beside=None if files is None else lambda _folder: ConfigSplits(config, files))
    return EvaluationSets(dataset, own, spec, calibration_count, seed)


def contract_task(output: Output) -> str:
    """The bundle's task for a config's output: a binary model's head gives [1 - p, p], rows
    that sum to one like a softmax ("multiclass"); "multilabel" stays."""
    return "multilabel" if output.task == "multilabel" else "multiclass"


def _architecture(config: ModelConfig) -> str:
    network = config.network
    if network.source in ("torchvision", "timm", "factory"):
        return f"{network.source} {describe_builder(network)}"
    return f"{network.source} {network.file.name if network.file else ''}".strip()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
