"""How small may a JPEG be decoded before the model's answers change? The measurement behind
``runtime.running.triage.DEFAULT_OVERSAMPLE``.

For each bundle and each candidate minimum decode scale (the decoded shorter side kept >= scale x
the model's input; libjpeg's DCT scaling gives 1/2, 1/4 or 1/8), every image is decoded at that
scale and at full size (``--exact-decode``), cropped and area-resized the way ``runtime triage``
does (:func:`runtime.preprocess.cpu.model_pixels_from_decode`), and both are scored by the bundle's
default artifact (the one triage runs). Reported per image set: mean, 99th percentile and max
|probability difference| and the decisions changed (one side of the threshold against the other).

Image sets (under ``--data``): ``cxr_samples`` (350 full-size Kermany JPEGs), ``adult_cxr`` (843
adult JPEGs, 512 px NIH and ~640 px Hannover) and ``dicom`` (DICOM files, decoded at full size
whatever the scale: their difference is 0 by construction, listed to show it).

    python -m benchmarks.decode_scale --bundle dist/cpu --bundle dist/clinical/cpu
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import BundleError

#: candidate minimum decode scales, relative to the model's input side
SCALES = (1.0, 1.5, 2.0, 3.0, 4.0, 8.0)
#: the image sets measured, folders under the data folder
IMAGE_SETS = ("cxr_samples", "adult_cxr", "dicom")
REPORT = Path(__file__).parent / "reports" / "decode_scale"


@dataclass(frozen=True)
class Bound:
    """What a decode scale may change against the exact decode, on every image set.

    The probability bound is what the kit already accepts between an INT8 artifact's answers on
    another device and at build (``device_tolerance`` of the INT8 formats, 0.03), at the 99th
    percentile; a changed decision or scope verdict is allowed on at most 1% of a set's images
    (images that sit at the threshold or at the scope guard's limit: any perturbation moves them).
    """

    p99: float = 0.03
    mean: float = 0.005
    changed_share: float = 0.01

    def holds(self, row: dict) -> bool:
        """Whether one set's comparison (:func:`compare`) is within the bound."""
        limit = self.changed_share * row["images"]
        return (row["p99"] <= self.p99 and row["mean"] <= self.mean
                and row["decisions_changed"] <= limit and row["scope_changed"] <= limit)


BOUND = Bound()


def smallest_within(result: dict, bound: Bound = BOUND) -> float | None:
    """The smallest scale whose every image set is within ``bound`` (None: none is)."""
    scales = sorted({float(s) for rows in result["sets"].values() for s in rows})
    for scale in scales:
        if all(bound.holds(rows[str(scale)]) for rows in result["sets"].values()):
            return scale
    return None


def reduce_to(size: int, scale: float) -> int:
    """The shorter side a reduced decode keeps for a model input whose larger side is ``size``
    px."""
    return math.ceil(size * scale)


def image_paths(folder: Path) -> list[Path]:
    """The files under ``folder`` named like images (sorted; manifests left out)."""
    from runtime.imaging.sniff import IMAGE_SUFFIXES

    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def model_input(path: Path, spec, reduce: int | None) -> tuple[np.ndarray, object]:
    """(height, width) uint8 model pixels of ``path`` decoded at >= ``reduce`` px (None: full) and
    the scope rules' verdict on that decode, as ``runtime triage`` computes them."""
    from runtime.imaging.decode import decode_file
    from runtime.judging.scope import assess
    from runtime.preprocess.cpu import model_pixels_from_decode

    decoded = decode_file(path, min_side=min(spec.shape), reduce_to=reduce)
    return model_pixels_from_decode(decoded.pixels, decoded.width, decoded.height,
                                    decoded.reduction, spec), assess(decoded)


def verdicts(bundle, paths: list[Path], reduce: int | None) -> tuple[list[Path], list]:
    """The files triage scores (those it refuses, e.g. a DICOM that is not a radiograph, left
    out) and their verdicts (probability, scope rules + feature guard) at decode size ``reduce``."""
    from runtime.errors import DecodeError
    from runtime.judging.verdict import score_batch
    from runtime.preprocess.cpu import normalize

    spec = bundle.preprocessing
    kept, pixels, scopes = [], [], []
    for path in paths:
        try:
            image, scope = model_input(path, spec, reduce)
        except DecodeError:
            continue
        kept.append(path)
        pixels.append(image)
        scopes.append(scope)
    return kept, score_batch(bundle, normalize(np.stack(pixels), spec), scopes)


def compare(exact: list, scaled: list, threshold: float) -> dict:
    """Mean, p99 and max |probability difference|, the decisions (probability >= threshold)
    (with the farthest exact probability from the threshold among them) and the scope verdicts
    (in / out) changed, of two lists of verdicts on the same files."""
    p_exact = np.array([v.probability for v in exact])
    p_scaled = np.array([v.probability for v in scaled])
    diff = np.abs(p_scaled - p_exact)
    changed = int(np.sum((p_scaled >= threshold) != (p_exact >= threshold)))
    margin = float(np.max(np.abs(p_exact - threshold)[(p_scaled >= threshold) !=
                                                       (p_exact >= threshold)], initial=0.0))
    scope = sum(a.scope.inside != b.scope.inside for a, b in zip(exact, scaled))
    return {"images": int(diff.size), "mean": float(diff.mean()),
            "p99": float(np.percentile(diff, 99)), "max": float(diff.max()),
            "decisions_changed": changed, "farthest_changed": margin, "scope_changed": scope}


def measure_bundle(bundle_path: Path, data: Path, scales: tuple[float, ...],
                   sets: tuple[str, ...] = IMAGE_SETS) -> dict:
    """Every image set x every scale against the exact decode, for one bundle."""
    from runtime.bundle.load import load_bundle

    bundle = load_bundle(bundle_path, device="cpu")
    size = max(bundle.preprocessing.shape)
    result = {"bundle": str(bundle_path), "artifact": bundle.describe()["artifact"],
              "size": size, "threshold": bundle.threshold, "sets": {}}
    for name in sets:
        paths, exact = verdicts(bundle, image_paths(data / name), None)
        rows = {}
        for scale in scales:
            _, scaled = verdicts(bundle, paths, reduce_to(size, scale))
            rows[str(scale)] = compare(exact, scaled, bundle.threshold)
        result["sets"][name] = rows
        print(f"  {bundle_path} {name}: {len(paths)} images", file=sys.stderr)
    return result


def markdown(results: list[dict], scales: tuple[float, ...], load: str) -> str:
    """The report: one table per bundle, a row per scale and image set."""
    lines = ["# Decode scale against the exact (full-size) decode", "",
             ("Generated by `python -m benchmarks.decode_scale`; probabilities of each bundle's "
             "default artifact, decoded at >= scale x the model input (JPEG DCT scaling) vs full "
             f"size. Machine load (1-min average) at the start: {load}. Bound (benchmarks.decode_scale."
              f"BOUND), on every set: p99 abs dp <= {BOUND.p99:g}, mean <= {BOUND.mean:g}, "
              f"decisions and scope verdicts changed <= {100 * BOUND.changed_share:g}% of the "
              "images."), ""]
    for result in results:
        lines += [(f"## {result['bundle']} ({result['artifact']}, {result['size']} px, threshold "
                  f"{result['threshold']:.4f})"), "",
                  ("| scale | set | images | mean abs dp | p99 abs dp | max abs dp | decisions changed "
                  "(farthest from the threshold, exact) | scope changed |"),
                  "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for scale in scales:
            for name, rows in result["sets"].items():
                row = rows[str(scale)]
                lines.append(f"| {scale:g}x | {name} | {row['images']} | {row['mean']:.5f} | "
                             f"{row['p99']:.4f} | {row['max']:.4f} | {row['decisions_changed']}"
                             + (f" ({row['farthest_changed']:.4f})" if row["decisions_changed"]
                                else "") + f" | {row['scope_changed']} |")
        chosen = smallest_within(result)
        lines += ["", f"Smallest scale within the bound: {'none' if chosen is None else f'{chosen:g}x'}",
                  ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_scale",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, action="append", required=True,
                        help="a bundle folder (repeatable), e.g. dist/cpu and dist/clinical/cpu")
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("CXR_DATA_DIR", "../shared/data")),
                        help="the data folder holding cxr_samples/, adult_cxr/, dicom/ "
                             "(default $CXR_DATA_DIR)")
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES),
                        help=f"candidate scales (default {' '.join(f'{s:g}' for s in SCALES)})")
    parser.add_argument("--out", type=Path, default=REPORT,
                        help="report path without suffix (default benchmarks/reports/decode_scale)")
    args = parser.parse_args(argv)
    scales = tuple(args.scales)
    load = f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    start = time.perf_counter()
    try:
        results = [measure_bundle(path, args.data, scales) for path in args.bundle]
    except (OSError, ValueError, BundleError) as exc:  # a missing bundle or data folder: say which
        print(f"decode_scale: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    json_path.write_text(json.dumps({"load": load, "scales": scales, "results": results},
                                    indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown(results, scales, load), encoding="utf-8")
    print(f"wrote {json_path} and {md_path} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
