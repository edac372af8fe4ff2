"""End-to-end triage throughput over full-size X-rays, with the decode-only rate beside it.

End to end is measured through the runtime's own entry point, the way a clinic runs it:
``python -m runtime triage FOLDER --bundle B --artifact A --out TMP`` in a fresh process (decode +
crop + resize in worker threads, normalise, inference, one results row per file); its
``summary.json`` gives the images/s of the run (walk to last row; bundle loading excluded) and its
peak memory. The decode-only rate runs the runtime's decode + crop + resize (``runtime.running.triage.
load_one``) with the same thread count over the same files, without a model: the practical
ceiling for end-to-end throughput.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.worker import REPO, run_worker
from runtime.running.triage import DEFAULT_OVERSAMPLE

TRIAGE_BATCH = 32


def default_workers() -> int:
    """The runtime CLI's default decoding threads: CPU count, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def image_files(folder: Path) -> list[Path]:
    """The files named like images under ``folder``, in the runtime's walk order."""
    from runtime.imaging.sniff import IMAGE_SUFFIXES
    from runtime.running.triage import walk

    return [entry.path for entry in walk(folder) if entry.path.suffix.lower() in IMAGE_SUFFIXES]


def _all_files(folder: Path) -> int:
    from runtime.running.triage import walk

    return sum(1 for _ in walk(folder))


def sample_folder(folder: Path, limit: int | None, into: Path) -> tuple[Path, int]:
    """``folder`` itself, or (``limit`` set) a folder of symlinks to an even spread of its images.

    The spread keeps both classes (the files are sorted by class folder). Returns the folder to
    triage and how many images it holds.
    """
    files = image_files(folder)
    if (not limit or limit >= len(files)) and _all_files(folder) == len(files):
        return folder, len(files)
    limit = min(limit or len(files), len(files))  # other files (a manifest): link the images
    step = len(files) / limit
    picked = [files[int(i * step)] for i in range(limit)]
    into.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(picked):
        link = into / f"{index:04d}_{path.parent.name}_{path.name}"
        link.symlink_to(path.resolve())
    return into, len(picked)


def decode_only(folder: Path, preprocessing: dict, workers: int, timeout: float) -> dict:
    """Decode-only images/s (fresh process; BLAS single-threaded like the runtime CLI sets it)."""
    result = run_worker({"kind": "decode", "folder": str(folder), "preprocessing": preprocessing,
                         "workers": workers, "oversample": DEFAULT_OVERSAMPLE}, timeout=timeout,
                        env={"OPENBLAS_NUM_THREADS": "1"})
    out = {"status": result.get("status"), "error": result.get("error")}
    out.update(result.get("decode") or {})
    out["peak_rss_mib"] = (result.get("memory") or {}).get("peak_rss_mib")
    return out


def run_triage_cli(arguments: list[str], timeout: float
                   ) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m runtime triage ARGUMENTS`` in a fresh process (this checkout first on the
    path); the finished process and its wall seconds. Raises subprocess.TimeoutExpired."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "runtime", "triage", *arguments], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - started


def triage_rate(folder: Path, bundle: Path, artifact: str, workers: int, expected: int,
                timeout: float, keep: Path | None = None) -> dict:
    """Run ``python -m runtime triage`` on ``folder`` with ``artifact``; its measured rate.

    ``keep``: a folder (not yet existing) to keep the run's results in; by default they are
    removed."""
    out_dir = keep or Path(tempfile.mkdtemp(prefix="cxr-bench-triage-"))
    try:
        proc, wall = run_triage_cli(
            [str(folder), "--bundle", str(bundle), "--artifact", artifact, "--out",
             str(out_dir / "results"), "--quiet", "--workers", str(workers), "--batch",
             str(TRIAGE_BATCH)], timeout)
    except subprocess.TimeoutExpired:
        if keep is None:
            shutil.rmtree(out_dir, ignore_errors=True)
        return {"status": "failed", "error": f"triage timed out after {timeout:.0f} s"}
    try:
        summary_path = out_dir / "results" / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    finally:
        if keep is None:
            shutil.rmtree(out_dir, ignore_errors=True)
    run = summary.get("this_run") or {}
    counts = summary.get("counts") or {}
    result = {"status": "ok", "error": None, "command": "python -m runtime triage",
              "images": run.get("processed"), "scored": counts.get("ok"),
              "errors": counts.get("errors"), "flagged": counts.get("flagged"),
              "seconds": run.get("seconds"), "images_per_second": run.get("images_per_second"),
              "peak_rss_mib": run.get("peak_rss_mib"), "batch": run.get("batch"),
              "workers": run.get("workers"), "wall_s": round(wall, 3),
              "preprocessing_backend": (summary.get("preprocessing") or {}).get("backend"),
              "notes": summary.get("notes") or []}
    if proc.returncode != 0 or not summary:
        last = [line for line in (proc.stderr or "").strip().splitlines() if line.strip()]
        result.update(status="failed", error=f"triage exited with code {proc.returncode}"
                      + (f": {last[-1][:300]}" if last else ""))
    elif run.get("processed") != expected or counts.get("errors"):
        result.update(status="failed", error=f"triage scored {counts.get('ok')} of {expected} "
                                             f"images ({counts.get('errors')} errors)")
    return result
