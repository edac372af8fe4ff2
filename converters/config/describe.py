"""What the kit understood of a config, in plain lines: ``python -m converters config --check``."""

from __future__ import annotations

from pathlib import Path

from converters.config.data import read_source
from converters.config.model import SPLITS, Data, DataSource, ModelConfig
from converters.config.network import describe_builder

DATA_ROLES = {"val": "decides threshold, gate, INT8 level, default artifact",
              "test": "only reported", "train": "INT8 calibration, scope guard reference"}
ACTIVATION = {"binary": "sigmoid of its one output", "multiclass": "softmax over the labels",
              "multilabel": "sigmoid per label"}


def describe(config: ModelConfig) -> list[str]:
    """The config as the kit will use it (reads the data sources' file lists and labels)."""
    return [f"config      {config.path}", f"name        {config.name}",
            *_network(config), *_input(config), *_output(config), _population(config),
            *_data(config)]


def _relative(path: Path, config: ModelConfig) -> str:
    try:
        return str(path.relative_to(config.folder))
    except ValueError:
        return str(path)


def _network(config: ModelConfig) -> list[str]:
    net = config.network
    if net.file is not None:
        return [f"network     {net.source} file {_relative(net.file, config)}"]
    lines = [f"network     {net.source} {describe_builder(net)}"]
    weights = (f"weights {_relative(net.weights, config)} (state_dict)" if net.weights
               else "weights: the factory's own")
    return lines + [f"            {weights}"]


def _input(config: ModelConfig) -> list[str]:
    i = config.input
    crop = {"none": "whole image resized", "center-square": "central square, resized",
            "center": f"resized, then the central {i.crop_fraction or 1:g} kept"}[i.crop]
    channels = "1 channel (gray)" if i.channels == 1 else "3 channels (the gray X-ray repeated)"
    return [f"input       {channels}, {i.size[0]}x{i.size[1]} px (height x width), {crop}, "
            f"{i.interpolation} interpolation",
            f"            x * {i.scale:.6g}, then (x - mean) / std per channel: mean "
            f"{_numbers(i.mean)}, std {_numbers(i.std)}"]


def _numbers(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _output(config: ModelConfig) -> list[str]:
    o = config.output
    made = ("the network's own probabilities (no softmax/sigmoid added)" if o.kind ==
            "probabilities" else f"logits; the kit applies the {ACTIVATION[o.task]}")
    lines = [f"output      {o.count} value(s) per image, {o.task}: {made}",
             f"            labels {', '.join(o.labels)}"]
    for finding in o.findings:
        lines.append(f"            finding {finding}: threshold = the highest with validation "
                     f"sensitivity >= {o.sensitivity[finding]:g}")
    return lines


def _population(config: ModelConfig) -> str:
    p = config.population
    ages = (f"ages {p.age_years[0]:g}-{p.age_years[1]:g} years" if p.age_years
            else "ages not declared")
    views = f"views {', '.join(p.views)}" if p.views else "views not declared"
    modalities = (f"modalities {', '.join(p.modalities)}" if p.modalities
                  else "modalities not declared")
    described = f"{p.description}; " if p.description else ""
    return f"population  {described}{ages}, {views}, {modalities}"


def _data(config: ModelConfig) -> list[str]:
    lines = _splits(config, config.data, "[data]", "data", DATA_ROLES)
    if config.data.files is not None:
        roles = {split: "as image files: scope guard, population check"
                 + ("; test figures on the files too" if split == "test" else "")
                 for split in SPLITS}
        lines += _splits(config, config.data.files, "[data.files]", "files", roles)
    return lines


def _splits(config: ModelConfig, data: Data, where: str, head: str, roles: dict[str, str]
            ) -> list[str]:
    lines = []
    for split in SPLITS:
        source: DataSource | None = getattr(data, split)
        if source is None:
            continue
        listing = read_source(source, config.output, f"{where} {split}")
        counts = ", ".join(f"{label} {n}" for label, n in listing.counts().items())
        lines.append(f"{head} {split:6s} {_where(source, config)}: {len(listing)} images "
                     f"({counts}); {roles[split]}")
    return lines


def _where(source: DataSource, config: ModelConfig) -> str:
    if source.kind == "folders":
        return f"{_relative(source.path, config)} (one folder per label)"
    if source.kind == "npz":
        return f"{_relative(source.path, config)} split {source.split}"
    return f"{_relative(source.path, config)} (images in {_relative(source.images, config)})"
