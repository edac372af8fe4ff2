"""``python -m benchmarks ray``: the single-process runner against archive triage on Ray.

Both runners triage the same folder with the same bundle and artifact, each through the runtime's
own command in a fresh process, one after the other in the same run:

    python -m runtime triage FOLDER --bundle B --artifact A --out TMP --quiet
    python -m runtime triage FOLDER --bundle B --artifact A --out TMP --quiet --ray --actors N

Ray starts a local Ray on this machine's cores (or joins ``--address``). Per run: images/s from the
run's summary.json (walk to last row; loading the bundle and starting Ray excluded, the actors'
start-up included), the wall time of the whole command, and for Ray the seconds until the first
rows came back and the rate after them (start-up left out); the ratio Ray / single-process (the
mean of a single-process run before and one after the Ray runs, as the load drifts); and
whether every Ray row says what the single-process row says (the probabilities within 1e-6, the
CSV's last digit). The load average before and after is recorded: on a shared machine the figures
move with the other work.
Writes benchmarks/reports/ray.json; the README's ``ray-comparison`` block is generated from it
(``python -m benchmarks readme``). Exit status: 0 measured, 1 a run failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.e2e import default_workers, run_triage_cli, sample_folder
from benchmarks.machine import cpu_facts, kit_revision, load_average, versions
from benchmarks.worker import REPO
from runtime.running.results import largest_difference, row_probabilities

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
DEFAULT_REPORT = Path("benchmarks/reports/ray.json")
#: the CSV writes 6 decimals; Ray's batches differ from the folder runner's (runtime tests)
PROBABILITY_TOLERANCE = 1e-6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folder", type=Path, default=None,
                        help="images to triage (default: kermany_train_224 in $CXR_DATA_DIR or "
                             "../shared/data: 5,216 JPEGs)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="triage an even spread of N of the folder's images (default: all)")
    parser.add_argument("--bundle", type=Path, default=Path("dist/cpu"),
                        help="bundle folder (default: dist/cpu)")
    parser.add_argument("--artifact", default=None,
                        help="artifact (default: the bundle's default_artifact)")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2], metavar="N",
                        help="engine actor counts to run on Ray (default: 1 2)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (default: start a local Ray per run)")
    parser.add_argument("--workers", type=int, default=None,
                        help="decode threads of the single-process runner (default: the CLI's)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds allowed per run (default 1800)")
    parser.add_argument("--out", type=Path, default=DEFAULT_REPORT,
                        help=f"report file (default: {DEFAULT_REPORT})")


def _data_folder() -> Path:
    env = os.environ.get("CXR_DATA_DIR")
    return (Path(env) if env else REPO.parent / "shared" / "data") / "kermany_train_224"


def _rows(path: Path) -> dict[str, dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def run_triage(folder: Path, bundle: Path, artifact: str | None, extra: list[str],
               timeout: float, keep: Path) -> dict:
    """One ``python -m runtime triage`` run into ``keep``; its summary's figures."""
    try:
        proc, wall = run_triage_cli(
            [str(folder), "--bundle", str(bundle), "--out", str(keep), "--quiet",
             *(["--artifact", artifact] if artifact else []), *extra], timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout:.0f} s"}
    summary_path = keep / "summary.json"
    if proc.returncode != 0 or not summary_path.is_file():
        last = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or [""]
        return {"status": "failed", "error": f"exit {proc.returncode}: {last[0][:300]}"}
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    run = summary["this_run"]
    return {"status": "ok", "command": "python -m runtime triage " + shlex.join(extra),
            "images": run["processed"], "errors": summary["counts"]["errors"],
            "seconds": run["seconds"], "images_per_second": run["images_per_second"],
            "wall_s": round(wall, 2), "driver_peak_rss_mib": run["peak_rss_mib"],
            "workers": run.get("workers"), "ray": run.get("ray"),
            "artifact": summary["bundle"]["artifact"]}


def compare_rows(ray_csv: Path, single_csv: Path) -> dict:
    """Do the Ray rows say what the single-process rows say? (max |dp| over scored files and
    every output column: the row's probability and each label's, p_<label>)"""
    ray_rows, single_rows = _rows(ray_csv), _rows(single_csv)
    keys = ("status", "prediction", "flagged", "error", "scope", "scope_reason")
    differ = [p for p in single_rows if p not in ray_rows
              or any(ray_rows[p][k] != single_rows[p][k] for k in keys)
              or row_probabilities(ray_rows[p]).keys() != row_probabilities(single_rows[p]).keys()]
    deltas = [largest_difference(ray_rows[p], row)
              for p, row in single_rows.items() if row["status"] == "ok" and p in ray_rows]
    worst = max(deltas, default=0.0)
    return {"rows": len(ray_rows), "same_paths": sorted(ray_rows) == sorted(single_rows),
            "rows_differing": len(differ), "max_abs_probability_diff": worst,
            "same": not differ and len(ray_rows) == len(single_rows)
                    and worst <= PROBABILITY_TOLERANCE}


def measure(args: argparse.Namespace, say) -> dict:
    """Run both runners on the folder; the report."""
    scratch = Path(tempfile.mkdtemp(prefix="cxr-bench-ray-"))
    try:
        folder, images = sample_folder(args.folder, args.limit, scratch / "sample")
        workers = args.workers or default_workers()
        report = {"created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "command": "python -m benchmarks " + shlex.join(args.argv),
                  "machine": {"cpu": cpu_facts(), "versions": versions(), "kit": kit_revision(),
                              "load_average_before": load_average()},
                  "folder": str(args.folder), "images": images, "bundle": str(args.bundle),
                  "address": args.address or "local", "runs": []}
        single_args = ["--workers", str(workers)]
        say(f"single-process runner, {workers} decode threads, {images} images")
        single = run_triage(folder, args.bundle, args.artifact, single_args, args.timeout,
                            scratch / "single")
        report["runs"].append({"runner": "single-process", **single})
        ray_runs = []
        for actors in args.actors:
            say(f"Ray, {actors} engine actor(s)")
            extra = ["--ray", *([args.address] if args.address else []), "--actors", str(actors)]
            result = run_triage(folder, args.bundle, args.artifact, extra, args.timeout,
                                scratch / f"ray-{actors}")
            if result["status"] == "ok" and single["status"] == "ok":
                result["rows_match_single_process"] = compare_rows(
                    scratch / f"ray-{actors}" / "results.csv", scratch / "single" / "results.csv")
            ray_runs.append({"runner": "ray", "actors": actors, **result})
        say("single-process runner again (the load may have changed meanwhile)")
        again = run_triage(folder, args.bundle, args.artifact, single_args, args.timeout,
                           scratch / "single-again")
        singles = [r["images_per_second"] for r in (single, again) if r["status"] == "ok"]
        baseline = sum(singles) / len(singles) if singles else None
        for result in ray_runs:
            if result["status"] == "ok" and baseline:
                result["ratio_to_single_process"] = round(
                    result["images_per_second"] / baseline, 3)
        report["runs"] += ray_runs + [{"runner": "single-process", "again": True, **again}]
        report["single_process_images_per_second_mean"] = baseline
        report["machine"]["load_average_after"] = load_average()
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """``python -m benchmarks ray``: measure, write the report, print the figures."""
    args.folder = args.folder or _data_folder()
    args.argv = argv
    if not args.folder.is_dir():
        print(f"error: image folder not found: {args.folder}; pass --folder or set CXR_DATA_DIR",
              file=sys.stderr)
        return EXIT_USAGE
    if not (args.bundle / "manifest.json").is_file():
        print(f"error: no bundle at {args.bundle} (manifest.json missing); build one with "
              "`python -m converters build` or pass --bundle", file=sys.stderr)
        return EXIT_USAGE
    if min(args.actors) < 1 or (args.limit is not None and args.limit < 1):
        print("error: --actors and --limit must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    report = measure(args, say)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    failed = False
    for entry in report["runs"]:
        name = entry["runner"] + (f", {entry['actors']} actors" if entry.get("actors") else "") \
            + (" (again)" if entry.get("again") else "")
        if entry["status"] != "ok":
            failed = True
            print(f"{name}: FAILED: {entry['error']}")
            continue
        ratio = entry.get("ratio_to_single_process")
        match = entry.get("rows_match_single_process")
        failed |= bool(match) and not match["same"]
        print(f"{name}: {entry['images_per_second']:.1f} images/s ({entry['images']} files, "
              f"{entry['seconds']:.1f} s; command {entry['wall_s']:.1f} s)"
              + (f", {ratio:.2f}x the single-process runner" if ratio is not None else "")
              + (f", rows {'match' if match['same'] else 'DIFFER'}" if match else ""))
    print(f"load average before {report['machine']['load_average_before']}, after "
          f"{report['machine']['load_average_after']}")
    print(f"wrote {args.out}")
    return EXIT_FAIL if failed else EXIT_OK
