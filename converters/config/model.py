"""``model.toml`` as typed values: :func:`load_config` parses and checks every key.

The config is the user-facing contract for bringing a trained network to the kit
(docs/model-config.md documents it key by key). Paths are relative to the config file's folder
(``${VAR}`` is replaced by the environment's value); nothing is loaded here but the TOML itself
and the data sources' file lists are not read (:mod:`converters.config.data` does that).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.config.tables import ConfigError, Table, describe_value, is_number, quoted
from runtime.contract.manifest import INTERPOLATIONS
from runtime.imaging.dicom import XRAY_MODALITIES

#: the ways a network can be given; exactly one per config
SOURCES = ("torchvision", "timm", "factory", "torchscript", "exported", "onnx")
#: sources that build the network in Python (they take kwargs and a weights file)
BUILDERS = ("torchvision", "timm", "factory")
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors")
FILE_SUFFIXES = {"torchscript": (".pt", ".pth", ".ts", ".torchscript"), "exported": (".pt2",),
                 "onnx": (".onnx",)}
CROPS = ("none", "center-square", "center")
KINDS = ("logits", "probabilities")
TASKS = ("binary", "multiclass", "multilabel")
#: DICOM ViewPosition values a population may name
VIEWS = ("PA", "AP", "LL", "RL", "LAT", "LATERAL", "LLD", "RLD")
MODALITIES = tuple(sorted(XRAY_MODALITIES))
SPLITS = ("val", "test", "train")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
FACTORY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.()/+-]*")
MAX_SIZE = 4096

TOP_KEYS = ("name", "network", "input", "output", "population", "data")
NETWORK_KEYS = SOURCES + ("kwargs", "weights")
INPUT_KEYS = ("channels", "size", "crop", "crop_fraction", "interpolation", "scale", "mean", "std")
OUTPUT_KEYS = ("kind", "task", "labels", "findings", "sensitivity")
POPULATION_KEYS = ("description", "age_years", "views", "modalities", "looks_like")
DATA_KEYS = SPLITS + ("files",)
SOURCE_KEYS = {"csv": ("csv", "images"), "npz": ("npz", "split")}
#: the sections a config must have, with what to write when one is missing ([population] is
#: optional)
SECTION_HINTS = {"network": "add [network] with one of " + ", ".join(SOURCES),
                 "input": "add [input] with size, mean and std",
                 "output": "add [output] with kind, task, labels, findings and sensitivity",
                 "data": 'add [data] with val = "<folder or CSV of validation images>"'}


@dataclass(frozen=True)
class Network:
    """Where the network comes from: ``source`` is one of :data:`SOURCES`; ``target`` the
    torchvision/timm model name or the factory's ``module:function``; ``file`` the TorchScript,
    exported or ONNX file; ``weights`` the state_dict for a builder (None: the factory's own)."""

    source: str
    target: str | None = None
    file: Path | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: Path | None = None

    @property
    def needs_torch(self) -> bool:
        return self.source != "onnx"


@dataclass(frozen=True)
class Input:
    """The image the network takes: ``channels`` x ``size`` (height, width); the gray X-ray is
    cropped, resized, multiplied by ``scale``, then ``(x - mean) / std`` per channel (``mean``
    and ``std`` hold one value per channel)."""

    channels: int
    size: tuple[int, int]
    crop: str
    crop_fraction: float | None
    interpolation: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)


@dataclass(frozen=True)
class Output:
    """What the network returns and what the kit does with it: ``labels`` in output order
    (binary: [negative, positive] for one output), ``findings`` the labels that send a case
    to a doctor, ``sensitivity`` the validation sensitivity each finding's threshold targets."""

    kind: str
    task: str
    labels: tuple[str, ...]
    findings: tuple[str, ...]
    sensitivity: dict[str, float]

    @property
    def count(self) -> int:
        """How many values the network returns per image."""
        return 1 if self.task == "binary" else len(self.labels)


@dataclass(frozen=True)
class Population:
    """Whom the model was trained for (None: not declared, not checked by the scope rules)."""

    description: str | None = None
    age_years: tuple[float, float] | None = None
    views: tuple[str, ...] | None = None
    modalities: tuple[str, ...] | None = None
    #: what the ``--out-of-population`` examples are, in the population check's verdict
    looks_like: str | None = None


@dataclass(frozen=True)
class DataSource:
    """Labelled images: ``folders`` (one subfolder per label), ``csv`` (path,label[,patient];
    paths relative to ``images``, by default the CSV's folder) or ``npz`` (MedMNIST layout:
    ``<split>_images`` and ``<split>_labels``)."""

    kind: str
    path: Path
    images: Path | None = None
    split: str | None = None


@dataclass(frozen=True)
class Data:
    """``val`` decides (threshold, gate, INT8 level, default artifact); ``test`` is only
    reported; ``train``: the training images (INT8 calibration, the scope guard's reference)."""

    val: DataSource
    test: DataSource | None = None
    train: DataSource | None = None
    #: ``[data.files]``: the same X-rays as the image files a clinic triages, when the splits
    #: above hold another rendering of them (e.g. PneumoniaMNIST's 28 px arrays of the Kermany
    #: JPEGs): the scope guard and the population check learn these files too, and the build
    #: also reports the test figures on them (None: the splits above are those files)
    files: "Data | None" = None


@dataclass(frozen=True)
class ModelConfig:
    path: Path
    name: str
    network: Network
    input: Input
    output: Output
    population: Population
    data: Data

    @property
    def folder(self) -> Path:
        return self.path.parent


def load_config(path: str | Path) -> ModelConfig:
    """Parse and check ``path`` (a ``model.toml``); :class:`ConfigError` names the first
    problem and its fix."""
    path = Path(path).absolute()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    try:
        return parse_config(raw, path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_config(raw: dict[str, Any], path: Path) -> ModelConfig:
    """The checked config of ``raw`` (parsed TOML) read from ``path``."""
    base = path.parent
    top = Table(raw, "top level", TOP_KEYS, base)
    name = top.string("name", hint='name the model, e.g. name = "densenet121-cxr"')
    if not NAME.fullmatch(name):
        raise ConfigError(f"name: {name!r} must be letters, digits, '.', '_' or '-' (it names "
                          "bundle folders and Triton models)")
    for key, hint in SECTION_HINTS.items():
        if key not in raw:
            raise ConfigError(f"[{key}]: missing; {hint}")
    sections = {key: Table(raw.get(key, {}), f"[{key}]", known, base)
                for key, known in (("network", NETWORK_KEYS), ("input", INPUT_KEYS),
                                   ("output", OUTPUT_KEYS), ("population", POPULATION_KEYS),
                                   ("data", DATA_KEYS))}
    output = parse_output(sections["output"])
    return ModelConfig(path=path, name=name, network=parse_network(sections["network"]),
                       input=parse_input(sections["input"]), output=output,
                       population=parse_population(sections["population"]),
                       data=parse_data(sections["data"], output))


def parse_network(table: Table) -> Network:
    given = [key for key in SOURCES if table.has(key)]
    if len(given) != 1:
        found = " and ".join([", ".join(given[:-1]), given[-1]] if len(given) > 2 else given) \
            if given else "none"
        raise ConfigError(f"[network]: give exactly one of {', '.join(SOURCES)}; found {found}")
    source = given[0]
    value = table.string(source)
    if source not in BUILDERS:
        for key in ("kwargs", "weights"):
            if table.has(key):
                raise ConfigError(f"[network] {key}: the {source} file holds the whole network "
                                  f"with its weights; remove {key}")
        file = table.path(source)
        if file.suffix.lower() not in FILE_SUFFIXES[source]:
            raise ConfigError(f"[network] {source}: {file.name} should end in "
                              f"{' or '.join(FILE_SUFFIXES[source])}")
        return Network(source=source, file=file)
    if source == "factory" and not FACTORY.fullmatch(value):
        raise ConfigError(f"[network] factory: {value!r} should be \"package.module:function\" "
                          'e.g. "my_pkg.nets:build" (the function returns the torch.nn.Module)')
    kwargs = table.raw("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ConfigError(f"[network] kwargs: expected a table, e.g. kwargs = {{ num_classes = 2 }}"
                          f", found {describe_value(kwargs)}")
    if source != "factory":
        downloads = sorted({"weights", "pretrained", "pretrained_cfg"} & set(kwargs))
        if downloads:
            raise ConfigError(f"[network] kwargs: {downloads[0]} would download weights; the kit "
                              "never downloads: remove it and give the trained state_dict as "
                              "[network] weights")
    weights = None
    if table.has("weights"):
        weights = table.path("weights")
        if weights.suffix.lower() not in WEIGHT_SUFFIXES:
            raise ConfigError(f"[network] weights: {weights.name} should be a state_dict saved "
                              f"by torch.save (.pt, .pth) or safetensors (.safetensors)")
    elif source != "factory":
        raise ConfigError(f"[network] weights: missing; {source} builds {value!r} with random "
                          "weights (nothing is downloaded): give the trained state_dict file "
                          '(.pt/.pth/.safetensors), e.g. weights = "model.pt"')
    return Network(source=source, target=value, kwargs=kwargs, weights=weights)


def parse_input(table: Table) -> Input:
    channels = table.raw("channels", 1)
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ConfigError(f"[input] channels: expected 1 (gray) or 3 (the gray X-ray repeated), "
                          f"found {describe_value(channels)}")
    size = _size(table)
    crop = table.choice("crop", CROPS, "none")
    fraction = None
    if crop == "center":
        fraction = table.number("crop_fraction", hint='crop = "center" keeps the central '
                                'crop_fraction of the resized image, e.g. crop_fraction = 0.875')
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"[input] crop_fraction: {fraction} must be in (0, 1]")
    elif table.has("crop_fraction"):
        raise ConfigError(f"[input] crop_fraction: applies to crop = \"center\" only (crop is "
                          f"\"{crop}\"); remove it")
    if crop == "center-square" and size[0] != size[1]:
        raise ConfigError(f"[input] crop: \"center-square\" would stretch a square into the "
                          f"{size[0]}x{size[1]} input; use crop = \"center\" with crop_fraction "
                          "= 1.0 (the largest central region of the input's shape) or \"none\"")
    scale = table.number("scale", 1.0 / 255.0)
    if scale <= 0.0:
        raise ConfigError(f"[input] scale: {scale} must be > 0 (pixels are 0-255; 1/255 maps "
                          "them to 0-1)")
    mean = _per_channel(table, "mean", channels)
    std = _per_channel(table, "std", channels)
    if any(s <= 0.0 for s in std):
        raise ConfigError(f"[input] std: every value must be > 0, found {list(std)}")
    return Input(channels=channels, size=size, crop=crop, crop_fraction=fraction,
                 interpolation=table.choice("interpolation", INTERPOLATIONS, "area"),
                 scale=scale, mean=mean, std=std)


def _size(table: Table) -> tuple[int, int]:
    value = table.raw("size", hint="the network's input size in pixels, e.g. size = 224 or "
                                   "size = [256, 224] (height, width)")
    sides = [value] if not isinstance(value, list) else value
    if len(sides) not in (1, 2) or (isinstance(value, list) and len(sides) != 2) or \
            not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_SIZE
                    for s in sides):
        raise ConfigError(f"[input] size: expected an integer or [height, width] between 1 and "
                          f"{MAX_SIZE}, found {describe_value(value)}")
    return (sides[0], sides[-1])


def _per_channel(table: Table, key: str, channels: int) -> tuple[float, ...]:
    value = table.raw(key, hint=f"give one value, or one per channel ({channels}), e.g. "
                                f"{key} = {[0.5] * channels}")
    values = value if isinstance(value, list) else [value]
    if len(values) not in (1, channels) or not all(is_number(v) for v in values):
        raise ConfigError(f"[input] {key}: expected 1 or {channels} numbers (channels = "
                          f"{channels}), found {describe_value(value)}")
    values = [float(v) for v in values]
    return tuple(values * channels if len(values) == 1 else values)


def parse_output(table: Table) -> Output:
    kind = table.choice("kind", KINDS)
    task = table.choice("task", TASKS)
    labels = table.strings("labels", hint='name the outputs in order, e.g. labels = ["NORMAL", '
                                          '"PNEUMONIA"]')
    bad = [label for label in labels if not LABEL.fullmatch(label) or len(label) > 64]
    if bad:
        raise ConfigError(f"[output] labels: {bad[0]!r} must start with a letter or digit and "
                          "hold only letters, digits, spaces and _ . ( ) / + - (at most 64 "
                          "characters); it names a results.csv column")
    folded = [label.casefold() for label in labels]
    if len(set(folded)) != len(folded):
        raise ConfigError(f"[output] labels: {list(labels)} differ only in upper/lower case; "
                          "results.csv needs distinct column names")
    least = {"binary": 2, "multiclass": 2, "multilabel": 1}[task]
    if len(labels) < least or (task == "binary" and len(labels) != 2):
        raise ConfigError(f"[output] labels: a {task} model needs "
                          + ("exactly 2 labels, [negative, positive] (its one output scores the "
                             "positive)" if task == "binary" else f"at least {least} labels")
                          + f"; found {len(labels)}")
    findings = table.strings("findings", hint=f"name the labels that send a case to a doctor, "
                                              f"e.g. findings = [\"{labels[-1]}\"]")
    if not findings:
        raise ConfigError("[output] findings: empty; name at least one label that sends a case "
                          "to a doctor")
    unknown = [f for f in findings if f not in labels]
    if unknown:
        raise ConfigError(f"[output] findings: {unknown[0]!r} is not a label; labels: "
                          f"{quoted(labels)}")
    if task == "binary" and findings != (labels[1],):
        raise ConfigError(f"[output] findings: a binary model's one output scores its second "
                          f"label; findings must be [\"{labels[1]}\"]")
    if task == "multiclass" and len(findings) == len(labels):
        raise ConfigError("[output] findings: every label is a finding, so every case would be "
                          "flagged; leave out the label of a clear case (e.g. NORMAL)")
    return Output(kind=kind, task=task, labels=labels, findings=findings,
                  sensitivity=_sensitivity(table, findings))


def _sensitivity(table: Table, findings: tuple[str, ...]) -> dict[str, float]:
    value = table.raw("sensitivity", hint="give the validation sensitivity each finding's "
                                          "threshold must reach, e.g. sensitivity = 0.98")
    if is_number(value):
        per = {f: value for f in findings}
    elif isinstance(value, dict):
        unknown = [k for k in value if k not in findings]
        if unknown:
            raise ConfigError(f"[output] sensitivity: {unknown[0]!r} is not a finding; "
                              f"findings: {quoted(findings)}")
        missing = [f for f in findings if f not in value]
        if missing:
            raise ConfigError(f"[output] sensitivity: no value for finding {missing[0]!r}; give "
                              "one per finding, or one number for all")
        per = dict(value)
    else:
        raise ConfigError(f"[output] sensitivity: expected a number, or a table with one per "
                          f"finding, found {describe_value(value)}")
    for finding, target in per.items():
        if not is_number(target) or not 0.0 < target <= 1.0:
            raise ConfigError(f"[output] sensitivity: {finding}: expected a number in (0, 1], "
                              f"e.g. 0.98, found {describe_value(target)}")
    return {f: float(per[f]) for f in findings}


def parse_population(table: Table) -> Population:
    description = table.string("description", None)
    ages = None
    if table.has("age_years"):
        ages = table.raw("age_years")
        if not isinstance(ages, list) or len(ages) != 2 or not all(is_number(a) for a in ages) \
                or not 0 <= ages[0] <= ages[1] <= 130:
            raise ConfigError(f"[population] age_years: expected [youngest, oldest] in years, "
                              f"0 <= youngest <= oldest <= 130, found {describe_value(ages)}")
        ages = (float(ages[0]), float(ages[1]))
    return Population(description=description, age_years=ages,
                      views=_subset(table, "views", VIEWS),
                      modalities=_subset(table, "modalities", MODALITIES),
                      looks_like=table.string("looks_like", None))


def _subset(table: Table, key: str, known: tuple[str, ...]) -> tuple[str, ...] | None:
    if not table.has(key):
        return None
    values = table.strings(key)
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        what = f"{unknown[0]!r} is not" if unknown else "an empty list names no"
        raise ConfigError(f"[population] {key}: {what} one of the DICOM values {quoted(known)}; "
                          f"leave {key} out to accept any")
    return values


def parse_data(table: Table, output: Output) -> Data:
    if not table.has("val"):
        raise ConfigError('[data] val: missing; give the validation images (they decide the '
                          'threshold, the gate and the default artifact), e.g. val = "data/val" '
                          '(one folder per label) or val = "val.csv" (path,label[,patient])')
    sources = {split: parse_source(table, split, output) for split in SPLITS
               if table.has(split)}
    files = None
    if table.has("files"):
        given = Table(table.raw("files"), "[data.files]", SPLITS, table.base)
        missing = [split for split in ("train", "val") if not given.has(split)]
        if missing:
            raise ConfigError(f"[data.files] {missing[0]}: missing; [data.files] gives the same "
                              "X-rays as image files, at least their train and val splits")
        files = Data(**{split: parse_source(given, split, output, "[data.files]")
                        for split in SPLITS if given.has(split)})
    return Data(**sources, files=files)


def parse_source(table: Table, split: str, output: Output, where: str = "[data]"
                 ) -> DataSource:
    """One data source: a folder or CSV path, or a ``{ csv, images }`` / ``{ npz, split }``
    table."""
    name = f"{where} {split}"
    value = table.raw(split)
    if isinstance(value, dict):
        kinds = [k for k in SOURCE_KEYS if k in value]
        if len(kinds) != 1:
            raise ConfigError(f"{name}: a table gives csv (with optional images) or npz (with "
                              f'split), e.g. {{ csv = "val.csv", images = "images" }}')
        kind = kinds[0]
        sub = Table(value, name, SOURCE_KEYS[kind], table.base)
        path = sub.path(kind)
        if kind == "csv":
            return _csv(path, sub.path("images") if sub.has("images") else path.parent, name)
        which = sub.choice("split", SPLITS)
        return DataSource(kind="npz", path=path, split=which)
    path = table.path(split)
    if path.is_dir():
        if output.task == "multilabel":
            raise ConfigError(f"{name}: a multilabel model's images need a CSV (path,label with "
                              "an image's labels joined by '|'), not one folder per label")
        return DataSource(kind="folders", path=path)
    if path.suffix.lower() == ".csv":
        return _csv(path, path.parent, name)
    if path.suffix.lower() == ".npz":
        raise ConfigError(f'{name}: an npz holds several splits; write {{ npz = "{path.name}", '
                          f'split = "{split}" }}')
    raise ConfigError(f"{name}: {path} is neither a folder (one subfolder per label) nor a "
                      ".csv file (path,label[,patient])")


def _csv(path: Path, images: Path, name: str) -> DataSource:
    if path.suffix.lower() != ".csv" or not path.is_file():
        raise ConfigError(f"{name}: {path} is not a .csv file (path,label[,patient])")
    if not images.is_dir():
        raise ConfigError(f"{name}: images: {images} is not a folder")
    return DataSource(kind="csv", path=path, images=images)
