"""``converters population fit``: learn a model's population check (:mod:`runtime.judging.population`).

In population: the model's own training X-rays as image files (the patient-grouped train side;
for a model trained on PneumoniaMNIST's 28 px arrays, the same X-rays as the Kermany files beside
them). Out of population: every image in each ``--out-of-population`` folder (for the reference
models, the adult chest X-rays of ``adult_cxr/nih`` and ``adult_cxr/hannover``; for a model made
for adults, Kermany's children). A small CNN on the whole image's 64 px gray thumbnail learns to
tell them apart (class-balanced sampling, intensity and geometry augmentation, seeded); its limit
is the score that holds :data:`SHARE` of the VALIDATION side. With two or more out-of-population
folders it is also fitted once per folder left out, and measured on that unseen folder (the
cross-source figures of its card). ``--report`` folders are measured only.

Writes, beside the checkpoint: ``population_check.onnx`` (the graph, about 0.1 MB) and
``population_check.json`` (its card: limit, what it was fitted on, every measured figure).
``converters build`` copies the graph into each bundle it builds from that checkpoint, declares it
in the manifest and re-measures the limit's in-scope rate on the build's validation split.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.contract.manifest import (
    POPULATION_CHECK,
    PopulationCheckInfo,
    Preprocessing,
)
from runtime.judging.population import INPUT, OUTPUT, THUMB, PopulationCheck, thumbnail

#: the card written beside the graph
CARD = "population_check.json"
#: the share of in-population validation X-rays the limit keeps in scope
SHARE = 0.99
METHOD = (f"small CNN (4 conv blocks, 16-128 channels, about 0.1 M weights) on the whole image's "
          f"{THUMB} px gray thumbnail, each thumbnail standardised; fitted on the model's training "
          "X-rays against out-of-population examples (class-balanced, augmented); limit = the "
          "score that holds the stated share of the validation X-rays")
#: the thumbnail as the build's image loaders make it: the whole image, area-resized
THUMB_SPEC = Preprocessing(size=THUMB, crop="none", interpolation="area")
WIDTH, EPOCHS, BATCH, SEED = 16, 8, 64, 0


class PopulationFitError(RuntimeError):
    """A population check that cannot be fitted (missing or unreadable images)."""


@dataclass
class Images:
    """Thumbnails of one set of images and its name in the card."""

    name: str
    thumbs: np.ndarray  # (N, THUMB, THUMB) uint8
    skipped: list[str] = field(default_factory=list)


# -- images -------------------------------------------------------------------------------------

def _ages(folder: Path) -> dict[Path, float]:
    """Each image's age from a ``manifest.csv`` (``path``, ``age``) in ``folder`` or its parent."""
    for place in (folder, folder.parent):
        listing = place / "manifest.csv"
        if listing.is_file():
            with open(listing, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            if rows and "age" in rows[0]:
                return {(place / r["path"]).resolve(): float(r["age"])
                        for r in rows if (r.get("age") or "").strip()}
    return {}


def folder_images(folder: Path, younger_than: float | None = None) -> tuple[Images, Images]:
    """Thumbnails of every image under ``folder``, and (apart) those whose manifest age is under
    ``younger_than`` years (held out: measured, never fitted on)."""
    from runtime.errors import DecodeError
    from runtime.imaging.decode import decode_file

    if not folder.is_dir():
        raise PopulationFitError(f"--out-of-population/--report {folder}: not a folder")
    ages = _ages(folder) if younger_than is not None else {}
    kept, young, skipped = [], [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() in (".csv", ".md", ".txt", ".json"):
            continue
        try:
            thumb = thumbnail(decode_file(path).pixels)
        except DecodeError:
            skipped.append(path.name)
            continue
        is_young = younger_than is not None and ages.get(path.resolve(), 1e9) < younger_than
        (young if is_young else kept).append(thumb)
    if not kept:
        raise PopulationFitError(f"{folder}: no image could be read")
    stack = lambda a: np.stack(a) if a else np.zeros((0, THUMB, THUMB), np.uint8)
    return (Images(folder.name, stack(kept), skipped),
            Images(f"{folder.name} under {younger_than or 0:g} years", stack(young)))


def model_images(checkpoint: Path, data: str | None) -> dict[str, Images]:
    """The model's train, val and test X-rays as thumbnails of their image files."""
    from converters.checkpoint import load_checkpoint
    from converters.data.sets import evaluation_sets

    spec = load_checkpoint(checkpoint).spec
    return _own_images(evaluation_sets(spec.name, spec.dataset, spec.preprocessing, data),
                       ("train", "val", "test"))


# -- the network ----------------------------------------------------------------------------------

def network(width: int = WIDTH):
    """The check's CNN; input (N, 1, THUMB, THUMB) pixel values 0-255, output (N, 1) scores."""
    import torch
    from torch import nn

    class Check(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers, channels = [], 1
            for out in (width, 2 * width, 4 * width, 8 * width):
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False),
                           nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
                channels = out
            self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Dropout(0.2), nn.Linear(channels, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x / 255.0
            mean = x.mean(dim=(2, 3), keepdim=True)
            spread = torch.sqrt(((x - mean) ** 2).mean(dim=(2, 3), keepdim=True) + 1e-6)
            return self.body((x - mean) / spread)

    return Check()


def _augment(x, generator):
    """Intensity (gamma), geometry (scale, shift, small rotation) and left-right flips."""
    import torch
    import torch.nn.functional as F

    n = len(x)
    uniform = lambda lo, hi, *shape: torch.rand(*shape, generator=generator) * (hi - lo) + lo
    x = (x / 255.0).clamp(1e-4, 1) ** torch.exp(uniform(-0.4, 0.4, n, 1, 1, 1))
    angle, scale, shift = uniform(-0.17, 0.17, n), uniform(0.85, 1.15, n), uniform(-0.08, 0.08, n, 2)
    theta = torch.stack([torch.stack([scale * torch.cos(angle), -scale * torch.sin(angle),
                                      shift[:, 0]], 1),
                         torch.stack([scale * torch.sin(angle), scale * torch.cos(angle),
                                      shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    flip = torch.rand(n, generator=generator) < 0.5
    x[flip] = x[flip].flip(-1)
    return x * 255.0


def train_check(inside: np.ndarray, outside: np.ndarray, epochs: int = EPOCHS,
                width: int = WIDTH, seed: int = SEED, say=print):
    """Fit the CNN: ``inside`` (label 0) against ``outside`` (label 1), class-balanced."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = network(width)
    x = torch.from_numpy(np.concatenate([inside, outside])).float()[:, None]
    y = torch.cat([torch.zeros(len(inside)), torch.ones(len(outside))])
    weights = torch.where(y == 1, len(inside) / len(outside), 1.0)
    steps = epochs * (len(x) // BATCH)
    optimiser = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 4e-3, total_steps=steps)
    started, step = time.perf_counter(), 0
    model.train()
    while step < steps:
        order = torch.multinomial(weights, len(x), replacement=True, generator=generator)
        for start in range(0, len(order) - BATCH + 1, BATCH):
            index = order[start:start + BATCH]
            loss = F.binary_cross_entropy_with_logits(
                model(_augment(x[index], generator))[:, 0], y[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            if step >= steps:
                break
    say(f"  fitted {len(inside)} in / {len(outside)} out of population: {steps} steps in "
        f"{time.perf_counter() - started:.0f} s")
    return model.eval()


def export_check(model, dest: Path) -> bytes:
    """The fitted CNN as a small ONNX graph (dynamic batch); returns its bytes."""
    import torch

    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.zeros(1, 1, THUMB, THUMB),), str(dest), input_names=[INPUT],
                      output_names=[OUTPUT], dynamic_axes={INPUT: {0: "n"}, OUTPUT: {0: "n"}},
                      opset_version=17, dynamo=False)
    return dest.read_bytes()


# -- limits and rates ---------------------------------------------------------------------------

def limit_for(scores: np.ndarray, share: float = SHARE) -> float:
    """The smallest score (rounded up to 4 decimals, as written) that holds ``share``."""
    return float(np.ceil(np.quantile(scores, share, method="higher") * 1e4) / 1e4)


def in_scope(check: PopulationCheck, thumbs: np.ndarray) -> float | None:
    """The share of ``thumbs`` within the check's limit (None for no images)."""
    if not len(thumbs):
        return None
    return float(np.mean(check.scores(thumbs) <= check.limit))


def fitted_check(inside: Images, val: Images, outside: list[Images], work: Path,
                 population: str, looks_like: str, say=print, epochs: int = EPOCHS
                 ) -> PopulationCheck:
    """Fit on ``inside`` against ``outside``, export, and set the limit on ``val`` with the
    exported graph (the runtime's own scores)."""
    model = train_check(inside.thumbs, np.concatenate([o.thumbs for o in outside]), epochs,
                        say=say)
    graph = export_check(model, work)
    probe = PopulationCheck(graph, float("inf"), SHARE, population, looks_like)
    limit = limit_for(probe.scores(val.thumbs))
    return PopulationCheck(graph, limit, SHARE, population, looks_like)


def fit_card(own: dict[str, Images], outside_dirs: list[Path], dest: Path, population: str,
             looks_like: str, checkpoints: list[str], report_dirs: list[Path] = (),
             younger_than: float | None = None, epochs: int = EPOCHS, say=print) -> dict:
    """THE fit of a population check (``population fit`` and ``build --out-of-population``
    alike): ``own``'s ``train`` side in population against every image of ``outside_dirs``,
    limit on its ``val`` side; with two or more folders, each is also left out once and measured
    (cross-source). Writes the graph to ``dest``; returns its card (every measured figure)."""
    outside, held = [], []
    for folder in outside_dirs:
        kept, young = folder_images(folder, younger_than)
        outside.append(kept)
        if len(young.thumbs):
            held.append(young)
    reports = [folder_images(folder)[0] for folder in report_dirs]
    measured = [own[s] for s in ("val", "test") if s in own] + reports + held
    say(f"out of population: {', '.join(f'{o.name} ({len(o.thumbs)})' for o in outside)}")
    cross = {}
    if len(outside) > 1:
        for left_out in outside:
            say(f"cross-source: fitting without {left_out.name}")
            check = fitted_check(own["train"], own["val"], [o for o in outside if o is not left_out],
                                 dest.with_suffix(".cross.onnx"), population, looks_like, say,
                                 epochs)
            cross[left_out.name] = {
                "out_of_scope": 1.0 - in_scope(check, left_out.thumbs),
                "n": len(left_out.thumbs), "limit": check.limit,
                **{s.name: in_scope(check, s.thumbs) for s in measured}}
            say(f"  {left_out.name}, unseen: {100 * cross[left_out.name]['out_of_scope']:.1f}% "
                f"out of scope")
        dest.with_suffix(".cross.onnx").unlink()
    say("fitting the shipped check on every out-of-population folder")
    check = fitted_check(own["train"], own["val"], outside, dest, population, looks_like, say,
                         epochs)
    rates = {s.name: {"in_scope": in_scope(check, s.thumbs), "n": len(s.thumbs)}
             for s in [*measured, *outside]}
    for name, rate in rates.items():
        say(f"  in scope: {100 * rate['in_scope']:.1f}% of {rate['n']}  {name}")
    return {"method": METHOD, "limit": check.limit, "share": SHARE, "looks_like": looks_like,
            "population": population, "thumbnail": THUMB, "epochs": epochs, "seed": SEED,
            "checkpoints": checkpoints,
            "fitted_on": f"in population: {own['train'].name} ({len(own['train'].thumbs)}); "
                         f"out of population: "
                         + ", ".join(f"{o.name} ({len(o.thumbs)})" for o in outside),
            "limit_set_on": f"{own['val'].name} ({len(own['val'].thumbs)})",
            "in_scope": rates, "cross_source": cross,
            "held_out": [h.name for h in held], "unreadable": {o.name: o.skipped for o in outside
                                                                 if o.skipped},
            "command": "python -m converters " + " ".join(sys.argv[1:])}


def fit(checkpoints: list[Path], outside_dirs: list[Path], report_dirs: list[Path],
        data: str | None, looks_like: str, younger_than: float | None, epochs: int = EPOCHS,
        say=print) -> list[Path]:
    """Fit, measure, and write the check and its card beside each checkpoint (models trained
    on the same X-rays, with the same validation split, share one fit); return the graphs."""
    from converters.checkpoint import load_checkpoint
    from converters.data.sets import evaluation_sets

    spec = load_checkpoint(checkpoints[0]).spec
    population = evaluation_sets(spec.name, spec.dataset, spec.preprocessing,
                                 data).population.description
    say(f"reading the model's X-rays as {THUMB} px thumbnails ({spec.name})")
    own = model_images(checkpoints[0], data)
    for other in checkpoints[1:]:
        theirs = model_images(other, data)
        if any(not np.array_equal(own[s].thumbs, theirs[s].thumbs) for s in ("train", "val")):
            raise PopulationFitError(f"{other} was not trained and validated on the same X-rays "
                                     f"as {checkpoints[0]}: fit its check on its own")
    dest = checkpoints[0].parent / POPULATION_CHECK
    card = fit_card(own, outside_dirs, dest, population, looks_like,
                    [c.name for c in checkpoints], report_dirs, younger_than, epochs, say)
    written = []
    for other in checkpoints:
        graph = other.parent / POPULATION_CHECK
        if graph != dest:
            graph.write_bytes(dest.read_bytes())
        (other.parent / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        written.append(graph)
    return written


def read_card(folder: Path) -> dict | None:
    """The card of the check beside a checkpoint (None: there is no check there)."""
    card, graph = folder / CARD, folder / POPULATION_CHECK
    if not graph.is_file():
        return None
    if not card.is_file():
        raise PopulationFitError(f"{graph} has no {CARD} beside it; refit it with "
                                 "`python -m converters population fit`")
    return json.loads(card.read_text(encoding="utf-8"))


def add_parser(sub) -> None:
    """``population fit`` under the converters command line."""
    parser = sub.add_parser("population", help="the population check: is an X-ray from the "
                                               "population the model was made for?")
    commands = parser.add_subparsers(dest="population_command", required=True)
    fit_parser = commands.add_parser(
        "fit", help="fit the check beside a checkpoint (population_check.onnx + .json)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fit_parser.add_argument("--model", choices=("tiny", "clinical"), action="append",
                            help="a reference model (default tiny; repeatable: models trained "
                                 "on the same X-rays share one fit)")
    fit_parser.add_argument("--checkpoint", action="append", default=[],
                            help="any other checkpoint (.safetensors; repeatable); the check is "
                                 "written beside it")
    fit_parser.add_argument("--out-of-population", action="append", required=True, type=Path,
                            metavar="DIR", help="a folder of X-rays outside the model's "
                            "population (repeatable: each is also left out once and measured)")
    fit_parser.add_argument("--report", action="append", default=[], type=Path, metavar="DIR",
                            help="a folder of in-population X-rays to measure only (repeatable)")
    fit_parser.add_argument("--looks-like", default="an adult chest X-ray",
                            help="what the out-of-population X-rays are, in the verdict's words "
                                 "(default: %(default)s)")
    fit_parser.add_argument("--hold-out-younger-than", type=float, metavar="YEARS",
                            help="leave out of fitting the out-of-population images whose "
                                 "manifest.csv age is under YEARS (measured apart)")
    fit_parser.add_argument("--epochs", type=int, default=EPOCHS, help="(default %(default)s)")
    fit_parser.add_argument("--data", help="the model's data file or folder (default: the usual "
                                           "places, $CXR_DATA_DIR)")
    fit_parser.set_defaults(func=cmd_fit)


def cmd_fit(args: argparse.Namespace) -> int:
    from converters.__main__ import _shipped_checkpoint

    checkpoints = [Path(c) for c in args.checkpoint] or \
        [_shipped_checkpoint(m) for m in args.model or ["tiny"]]
    say = lambda m: print(m, file=sys.stderr, flush=True)
    written = fit(checkpoints, args.out_of_population, args.report, args.data, args.looks_like,
                  args.hold_out_younger_than, args.epochs, say=say)
    for dest in written:
        print(f"wrote {dest} and {dest.parent / CARD}")
    return 0


# -- the build ----------------------------------------------------------------------------------

#: the verdict's words for the out-of-population examples when nobody named them
DEFAULT_LOOKS_LIKE = "an X-ray unlike the ones this model was trained on"


@dataclass(frozen=True)
class PopulationRequest:
    """``converters build --out-of-population``: fit the check in the build, on the model's own
    training X-rays against every image of ``outside`` (the same fit as ``population fit``)."""

    outside: tuple[Path, ...]
    looks_like: str | None = None  # the verdict's words (None: DEFAULT_LOOKS_LIKE)
    epochs: int = EPOCHS


def _own_images(sets, sides: tuple[str, ...]) -> dict[str, Images]:
    """The model's ``sides`` X-rays as thumbnails of their image files (a side the model's data
    does not give, e.g. a config without ``[data] test``, is left out unless it is train/val)."""
    from converters.data.labelled import DatasetError

    own = {}
    for side in sides:
        try:
            images = sets.image_files_at(THUMB_SPEC, (side,))[side]
        except DatasetError:
            if side in ("train", "val"):
                raise
            continue
        own[side] = Images(f"{side}: {images.source}", images.images)
    return own


def build_check(sets, checkpoint: Path, request: PopulationRequest | None, work: Path,
                say=print) -> tuple[PopulationCheckInfo, Path] | None:
    """The bundle's population check and the graph to copy: fitted now when ``request`` asks
    (its card goes into the manifest and the report), else the one fitted beside ``checkpoint``
    re-measured on the build's validation X-rays, else None."""
    population = sets.population.description
    if request is None:
        if read_card(checkpoint.parent) is None:
            return None
        val = sets.image_files_at(THUMB_SPEC, ("val",))["val"]
        return bundle_check(checkpoint, val.images, population)
    looks_like = request.looks_like or DEFAULT_LOOKS_LIKE
    say(f"population check: reading the model's X-rays as {THUMB} px thumbnails")
    own = _own_images(sets, ("train", "val", "test"))
    graph = work / POPULATION_CHECK
    card = fit_card(own, list(request.outside), graph, population, looks_like,
                    [checkpoint.name], epochs=request.epochs, say=say)
    return check_info(graph, card, own["val"].thumbs, population, "this build's fit"), graph


def check_info(graph: Path, card: dict, val_thumbs: np.ndarray, population: str, where: str
               ) -> PopulationCheckInfo:
    """The manifest's ``population_check`` (file fields filled in by the bundle writer) for
    ``graph`` and its ``card``, the limit's in-scope rate re-measured on ``val_thumbs``."""
    try:
        limit, share, looks_like = float(card["limit"]), float(card["share"]), str(card["looks_like"])
        check = PopulationCheck(graph.read_bytes(), limit, share, population, looks_like)
        rate = in_scope(check, val_thumbs)
        fitted_on = str(card["fitted_on"])
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise PopulationFitError(f"{where} or its graph cannot be used ({exc}); refit with "
                                 "`python -m converters population fit`") from None
    if rate is None or rate < share - 0.01:
        raise PopulationFitError(
            f"the population check of {where} keeps {100 * (rate or 0):.1f}% of this build's "
            f"validation X-rays in scope, fewer than its {100 * share:g}%: it was fitted on "
            "other images; refit with `python -m converters population fit`")
    return PopulationCheckInfo(
        path=POPULATION_CHECK, sha256="", bytes=0, method=str(card.get("method", METHOD)),
        limit=limit, share=share, looks_like=looks_like, fitted_on=fitted_on,
        val_in_scope=rate, val_n=len(val_thumbs), thumbnail=THUMB, card=card)


def bundle_check(checkpoint: Path, val_thumbs: np.ndarray, population: str
                 ) -> tuple[PopulationCheckInfo, Path] | None:
    """:func:`check_info` for the check fitted beside ``checkpoint`` (None: there is none)."""
    card = read_card(checkpoint.parent)
    if card is None:
        return None
    graph = checkpoint.parent / POPULATION_CHECK
    return check_info(graph, card, val_thumbs, population, f"{graph.parent / CARD}"), graph


#: what a build without a population check says, in one line
NO_CHECK = ("no population check in this bundle: it cannot tell from the picture whether an X-ray "
            "is from the model's population; add one with --out-of-population DIR (a folder of "
            "X-rays the model was not made for; repeatable)")
