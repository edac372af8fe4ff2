"""Peak memory of triage decoding on a folder of near-limit images.

    python -m benchmarks.memory                        4 x 78-megapixel 16-bit PNGs, default workers
    python -m benchmarks.memory --megapixels 40 --count 6 --kind png16rgb --workers 4

Generates the images (a real chest X-ray from the shared data, upscaled, so the content is an
X-ray's) into a temporary folder, then decodes them exactly as ``python -m runtime triage`` does
(the walk, ``runtime.running.triage.load_one`` in the abandonable worker pool, the shared decode memory
budget) in a fresh process, and reports that process's baseline and peak resident memory. The
model is left out on purpose: its memory does not depend on the images. Prints a JSON report and
writes it to --out when given. Exit status: 0 measured, 1 failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.e2e import default_workers

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
KINDS = ("png16", "png16rgb", "png16rgba", "tiff16", "jpeg")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=4, help="images to generate (default 4)")
    parser.add_argument("--megapixels", type=float, default=78.0,
                        help="size of each image (default 78; the runner's limit is 80)")
    parser.add_argument("--kind", choices=KINDS, default="png16",
                        help="image kind (default png16: 16-bit grayscale PNG)")
    parser.add_argument("--workers", type=int, default=None,
                        help="decode threads (default: the runner's default, CPU count at most 4)")
    parser.add_argument("--budget-mib", type=int, default=None,
                        help="decode memory budget (default: the runner's, runtime.imaging.limits)")
    parser.add_argument("--data", type=Path, default=None,
                        help="shared data folder with cxr_samples/ (default: $CXR_DATA_DIR or "
                             "../shared/data)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def _rss_peak_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec
    from the parent that generated the images)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def generate(folder: Path, data: Path, count: int, megapixels: float, kind: str) -> list[Path]:
    """``count`` images of ``megapixels`` each, upscaled from a real X-ray, written to ``folder``."""
    import cv2
    import numpy as np

    sample = sorted((data / "cxr_samples").rglob("*.jpeg"))[0]
    gray = cv2.imread(str(sample), cv2.IMREAD_GRAYSCALE)
    aspect = gray.shape[1] / gray.shape[0]
    height = int((megapixels * 1e6 / aspect) ** 0.5)
    width = int(megapixels * 1e6 / height)
    big = cv2.resize(gray, (width, height), interpolation=cv2.INTER_LINEAR)
    paths = []
    for i in range(count):
        image = np.roll(big, i * 97, axis=1)  # distinct files, same content statistics
        if kind == "jpeg":
            path = folder / f"near_limit_{i}.jpg"
            cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        else:
            deep = image.astype(np.uint16) * 257
            if kind in ("png16rgb", "png16rgba"):
                deep = cv2.merge([deep] * (4 if kind == "png16rgba" else 3))
            suffix = ".tif" if kind == "tiff16" else ".png"
            path = folder / f"near_limit_{i}{suffix}"
            params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if suffix == ".png" else []
            if not cv2.imwrite(str(path), deep, params):
                raise RuntimeError(f"could not write {path}")
            del deep
        paths.append(path)
        del image
    return paths


def child(folder: Path, workers: int, budget_mib: int | None) -> dict:
    """Decode every file under ``folder`` as triage does; memory figures of this process."""
    from runtime.contract.manifest import Preprocessing
    from runtime.imaging.limits import DECODE_TIMEOUT_S, DEFAULT_MEMORY_BUDGET, MemoryBudget
    from runtime.imaging.pool import DecodePool
    from runtime.running.triage import (DEFAULT_OVERSAMPLE, load_one, reduce_to_for, timed_out,
                                        walk)

    spec = Preprocessing()
    entries = list(walk(folder))
    baseline = _rss_peak_mib()
    budget = MemoryBudget(budget_mib * 2**20 if budget_mib else DEFAULT_MEMORY_BUDGET)
    pool = DecodePool(workers, DECODE_TIMEOUT_S)
    start = time.perf_counter()
    jobs = [pool.submit(load_one, e, spec, reduce_to_for(spec, DEFAULT_OVERSAMPLE), False, budget)
            for e in entries]
    loaded = [pool.wait(job, lambda j: timed_out(j.args[0], DECODE_TIMEOUT_S)) for job in jobs]
    pool.shutdown()
    return {"files": len(loaded), "decoded": sum(1 for item in loaded if not item.error),
            "errors": sorted({item.error for item in loaded if item.error}),
            "workers": workers, "seconds": round(time.perf_counter() - start, 2),
            "baseline_rss_mib": round(baseline), "peak_rss_mib": round(_rss_peak_mib()),
            "budget_mib": round(budget.total / 2**20),
            "budget_peak_reserved_mib": round(budget.peak / 2**20)}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    workers = args.workers or default_workers()
    if args.child:
        print(json.dumps(child(args.child, workers, args.budget_mib)))
        return EXIT_OK
    if args.count < 1 or args.megapixels <= 0 or workers < 1:
        print("error: --count, --megapixels and --workers must be positive", file=sys.stderr)
        return EXIT_USAGE
    data = args.data or Path(os.environ.get("CXR_DATA_DIR", "../shared/data"))
    if not (data / "cxr_samples").is_dir():
        print(f"error: no cxr_samples/ under {data}: pass --data or set CXR_DATA_DIR",
              file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="cxr-memory-") as tmp:
        folder = Path(tmp)
        print(f"generating {args.count} x {args.megapixels:g} MP {args.kind} in {folder} ...",
              file=sys.stderr)
        paths = generate(folder, data, args.count, args.megapixels, args.kind)
        size_mib = sum(p.stat().st_size for p in paths) / 2**20
        command = [sys.executable, "-m", "benchmarks.memory", "--child", str(folder),
                   "--workers", str(workers)]
        if args.budget_mib:
            command += ["--budget-mib", str(args.budget_mib)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"error: the measuring process failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            return EXIT_FAIL
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    report.update({"kind": args.kind, "megapixels": args.megapixels,
                   "files_mib": round(size_mib)})
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
