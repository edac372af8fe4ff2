"""End-to-end triage against its ceiling and against the naive script, in ONE run.

For each bundle, on the same folder of full-size X-rays, with the same decoding threads:

- **plain loop** (the ceiling): read, DCT-scaled JPEG decode to >= the runtime's decode scale x
  the model input, gray, centre square, OpenCV area resize; no model (``benchmarks.worker``
  ``plain`` job);
- **kit loop, no model**: the runtime's own ``load_one`` (checks, scope rules, sha256, crop,
  resize) over the same files (``decode`` job);
- **kit triage**: ``python -m runtime triage`` as a whole process; its loop rate (summary.json,
  walk to last row) and the process's wall time; peak RSS;
- **naive**: ``python -m benchmarks.naive`` (Pillow decode, gray, resize, PyTorch FP32, batch
  32) as a whole process, wall time.

The machine may be shared: the report gives ratios measured in the same run and the load average,
never absolute speeds to compare across runs.

    python -m benchmarks.ceiling --bundle dist/cpu --bundle dist/clinical/cpu \\
        --memory-bundle dist/arm --memory-bundle dist/clinical/arm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.e2e import default_workers, sample_folder, triage_rate
from benchmarks.worker import REPO, run_worker
from runtime.running.triage import DEFAULT_OVERSAMPLE

REPORT = Path(__file__).parent / "reports" / "ceiling"


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def loop_rate(kind: str, folder: Path, preprocessing: dict, workers: int) -> float | None:
    """Images/s of a ``plain`` or ``decode`` worker job (BLAS single-threaded, as the CLI)."""
    result = run_worker({"kind": kind, "folder": str(folder), "preprocessing": preprocessing,
                         "workers": workers, "oversample": DEFAULT_OVERSAMPLE},
                        env={"OPENBLAS_NUM_THREADS": "1"})
    return (result.get("decode") or {}).get("images_per_second")


def naive_seconds(folder: Path, checkpoint: Path, out: Path) -> float | None:
    """Wall seconds of the naive script as a whole process (None when it failed)."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.naive", str(folder), "--checkpoint",
                           str(checkpoint), "--out", str(out)], check=False, cwd=REPO,
                          capture_output=True, text=True)
    return time.perf_counter() - started if proc.returncode == 0 else None


def _best(values: list) -> float | None:
    return max((v for v in values if v), default=None)


def measure(bundle: Path, folder: Path, workers: int, images: int, scratch: Path,
            repeats: int) -> dict:
    """Every rate and ratio for one bundle: the measurements alternate ``repeats`` times (plain,
    kit, triage, naive, plain, ...) and the best of each is kept, so that a load change on a
    shared machine touches them alike."""
    info = manifest(bundle)
    spec = info["preprocessing"]
    checkpoint = REPO / "models" / ("clinical" if spec["size"] > 28 else "reference") / \
        info["provenance"]["checkpoint"]
    row = {"bundle": str(bundle), "artifact": info["default_artifact"], "size": spec["size"],
           "load_start": os.getloadavg()[0], "repeats": repeats}
    plain, kit, loop, wall, naive, rss = [], [], [], [], [], []
    for _ in range(repeats):
        plain.append(loop_rate("plain", folder, spec, workers))
        kit.append(loop_rate("decode", folder, spec, workers))
        triage = triage_rate(folder, bundle, info["default_artifact"], workers, images, 900)
        row.update(triage_status=triage["status"], triage_error=triage.get("error"))
        loop.append(triage.get("images_per_second"))
        wall.append(-(triage.get("wall_s") or 0))  # best = shortest
        rss.append(triage.get("peak_rss_mib"))
        naive.append(-(naive_seconds(folder, checkpoint, scratch / f"naive-{spec['size']}.csv")
                       or 0))
    row.update(plain_ips=_best(plain), kit_loop_no_model_ips=_best(kit), triage_loop_ips=_best(loop),
               triage_wall_s=-_best(wall) if _best(wall) else None,
               naive_wall_s=-_best(naive) if _best(naive) else None,
               triage_peak_rss_mib=_best(rss), load_end=os.getloadavg()[0])
    if row["plain_ips"]:
        for key in ("kit_loop_no_model_ips", "triage_loop_ips"):
            row[f"{key}_over_plain"] = (row[key] or 0) / row["plain_ips"]
    if row["naive_wall_s"] and row["triage_wall_s"]:
        row["naive_wall_over_triage_wall"] = row["naive_wall_s"] / row["triage_wall_s"]
    return row


def memory(bundle: Path, folder: Path, workers: int, images: int) -> dict:
    """Peak RSS of ``runtime triage`` with ``bundle`` over the folder."""
    info = manifest(bundle)
    triage = triage_rate(folder, bundle, info["default_artifact"], workers, images, 900)
    return {"bundle": str(bundle), "artifact": info["default_artifact"], "size":
            info["preprocessing"]["size"], "status": triage["status"],
            "peak_rss_mib": triage.get("peak_rss_mib"), "workers": workers}


def _cell(value, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def markdown(rows: list[dict], memory_rows: list[dict], folder: Path, images: int,
             workers: int) -> str:
    lines = ["# Triage against its ceiling and the naive script (one run)", "",
             (f"Generated by `python -m benchmarks.ceiling` on {images} images of `{folder.name}`, "
             f"{workers} decoding threads, {os.cpu_count()} CPUs, decode scale >= "
             f"{DEFAULT_OVERSAMPLE:g}x the model input. The machine may be shared: compare the "
             "ratios, not the images/s across runs (load average per bundle). Each figure is the "
              "best of the alternating repeats."), "",
             ("| bundle | px | load (start-end) | plain loop img/s | kit loop, no model / plain | "
             "triage loop / plain | naive wall / triage wall |"),
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['bundle']} ({r['artifact']}) | {r['size']} | {r['load_start']:.1f}-"
            f"{r['load_end']:.1f} | {_cell(r['plain_ips'], '.0f')} | "
            f"{_cell(r.get('kit_loop_no_model_ips_over_plain'), '.2f')} | "
            f"{_cell(r.get('triage_loop_ips_over_plain'), '.2f')} | "
            f"{_cell(r.get('naive_wall_over_triage_wall'), '.2f')}x |")
    lines += ["", "| bundle | triage loop img/s | triage wall s | naive wall s | peak RSS MiB |",
              "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['bundle']} | {_cell(r['triage_loop_ips'], '.0f')} | "
                     f"{_cell(r['triage_wall_s'], '.1f')} | {_cell(r['naive_wall_s'], '.1f')} | "
                     f"{_cell(r['triage_peak_rss_mib'], '.0f')} |")
    if memory_rows:
        lines += ["", "Peak RSS of `runtime triage` (whole process):", "",
                  "| bundle | artifact | px | workers | peak RSS MiB |", "|---|---|---:|---:|---:|"]
        lines += [f"| {m['bundle']} | {m['artifact']} | {m['size']} | {m['workers']} | "
                  f"{_cell(m['peak_rss_mib'], '.0f')} |" for m in memory_rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceiling",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, action="append", required=True,
                        help="a CPU bundle of a reference model (repeatable)")
    parser.add_argument("--memory-bundle", type=Path, action="append", default=[],
                        help="a bundle whose triage peak RSS is measured too (repeatable)")
    parser.add_argument("--images", type=Path,
                        default=Path(os.environ.get("CXR_DATA_DIR", "../shared/data")) /
                        "cxr_samples", help="folder of full-size X-ray JPEGs "
                                            "(default $CXR_DATA_DIR/cxr_samples)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="decoding threads (default: the runtime CLI's)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="alternating measurements per bundle, the best of each kept (2)")
    parser.add_argument("--out", type=Path, default=REPORT,
                        help="report path without suffix (default benchmarks/reports/ceiling)")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="cxr-ceiling-"))
    try:
        # the images only (a manifest beside them would be an error row): linked into scratch
        folder, images = sample_folder(args.images, None, scratch / "images")
        if not images:
            print(f"ceiling: no images under {args.images}", file=sys.stderr)
            return 1
        rows = [measure(b, folder, args.workers, images, scratch, args.repeats)
                for b in args.bundle]
        memory_rows = [memory(b, folder, args.workers, images) for b in args.memory_bundle]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    json_path.write_text(json.dumps({"rows": rows, "memory": memory_rows}, indent=2) + "\n",
                         encoding="utf-8")
    md_path.write_text(markdown(rows, memory_rows, args.images, images, args.workers),
                       encoding="utf-8")
    print(f"wrote {json_path} and {md_path}")
    failed = [r for r in rows if r["triage_status"] != "ok" or not r["naive_wall_s"]] + \
        [m for m in memory_rows if m["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
