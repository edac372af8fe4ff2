"""What the population check costs at triage, per image, beside what triage already does.

``python -m benchmarks.population_cost FOLDER --bundle dist/cpu``: decodes the first ``--n``
images of FOLDER as triage does, then times, per image on this machine (median of ``--repeat``
passes): the decode, the scope rules, the population check one image at a time (thumbnail + ONNX
graph: ``PopulationCheck.judge``), the check as triage runs it (the thumbnail in the decode
worker, the graph on the thumbnails of a batch of 32 together: ``scope.conclude``), and the
bundle's model on a batch of 64 (per image). Prints the check's milliseconds and their share of
the rest; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from runtime.bundle.load import load_bundle
from runtime.imaging.decode import decode_file
from runtime.judging.population import thumbnail
from runtime.judging.scope import Pending, assess, conclude
from runtime.preprocess.cpu import model_pixels_from_decode, normalize
from runtime.running.triage import DEFAULT_OVERSAMPLE, reduce_to_for


def _per_image_ms(step, items, repeat: int) -> float:
    """Median over ``repeat`` passes of the mean milliseconds ``step`` takes per item."""
    passes = []
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            step(item)
        passes.append(1000.0 * (time.perf_counter() - started) / len(items))
    return statistics.median(passes)


def measure(folder: Path, bundle_dir: Path, n: int, repeat: int) -> dict[str, float]:
    """Milliseconds per image of each step (see the module's words)."""
    bundle = load_bundle(bundle_dir, device="cpu")
    check = bundle.population_check
    if check is None:
        raise SystemExit(f"{bundle_dir} has no population check: rebuild it from a checkpoint "
                         "with population_check.onnx beside it")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    paths = paths[:n]
    if not paths:
        raise SystemExit(f"{folder}: no JPEG or PNG images")
    spec = bundle.preprocessing
    reduce_to = reduce_to_for(spec, DEFAULT_OVERSAMPLE)  # triage's reduced JPEG decode

    def decode(path: Path):
        return decode_file(path, reduce_to=reduce_to)

    decoded = [decode(p) for p in paths]
    check.judge(decoded[0].pixels)  # the session is made on first use
    pixels = np.stack([model_pixels_from_decode(d.pixels, d.width, d.height, d.reduction, spec)
                       for d in decoded])
    batches = [normalize(pixels[i:i + 64], spec) for i in range(0, len(pixels), 64)]
    model = _per_image_ms(bundle.predict, batches, repeat) * len(batches) / len(paths)
    return {"images": len(paths),
            "decode": _per_image_ms(decode, paths, repeat),
            "rules": _per_image_ms(lambda d: assess(d, bundle.population), decoded, repeat),
            "check, one image": _per_image_ms(lambda d: check.judge(d.pixels), decoded, repeat),
            "check, batch 32": _batched_check_ms(check, decoded, repeat),
            "model (batch 64)": model}


def _batched_check_ms(check, decoded, repeat: int) -> float:
    """Milliseconds per image of the check as triage runs it: each thumbnail made (the decode
    worker's part), then the thumbnails of each batch of 32 scored together (the batch's)."""
    def batch(items) -> None:
        conclude([Pending((), thumbnail(d.pixels)) for d in items], check)

    batches = [decoded[i:i + 32] for i in range(0, len(decoded), 32)]
    return _per_image_ms(batch, batches, repeat) * len(batches) / len(decoded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.population_cost",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a folder of JPEG/PNG X-rays")
    parser.add_argument("--bundle", type=Path, default=Path("dist/cpu"),
                        help="a bundle with a population check (default %(default)s)")
    parser.add_argument("--n", type=int, default=200, help="images (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="passes (default %(default)s)")
    args = parser.parse_args(argv)
    ms = measure(args.folder, args.bundle, args.n, args.repeat)
    rest = ms["decode"] + ms["rules"] + ms["model (batch 64)"]
    print(f"{args.bundle} on {ms.pop('images')} images of {args.folder}, ms per image:")
    for step, value in ms.items():
        print(f"  {step:18s} {value:8.3f}")
    for step in ("check, one image", "check, batch 32"):
        print(f"  {step}: {ms[step]:.3f} ms per image, {ms[step] / rest:.2f}x the decode + rules + "
              f"model ({rest:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
