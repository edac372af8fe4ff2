"""OpenVINO's own ``benchmark_app`` on the same IR, beside the kit's figure.

``benchmark_app`` ships in the openvino wheel and is OpenVINO's reference for what an IR can do
on a device. The suite runs it on every timed OpenVINO artifact with the kit's settings (batch 64,
``THROUGHPUT`` hint, the kit's inference precision and threads, the kit's seconds per throughput
point rounded up to whole seconds, its own minimum) and reports ``kit / benchmark_app``.

It runs as ``python -m benchmarks.openvino_app ARGS``: exactly the console script
(``openvino.tools.benchmark.main.main``) with openvino's telemetry switched off first
(:func:`runtime.engines.openvino_engine.import_openvino`), so that no measurement opens a network connection.
Its figure is the ``Throughput: N FPS`` line it prints (N = images/s: iterations x batch / time).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

BATCH = 64
HINT = "throughput"
TARGET_RATIO = 0.9  # the kit's throughput should reach at least this share of benchmark_app's
_THROUGHPUT = re.compile(r"Throughput:\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*FPS")
_COUNT = re.compile(r"Count:\s*([0-9]+)\s*iterations")
_DURATION = re.compile(r"Duration:\s*([0-9]+(?:\.[0-9]+)?)\s*ms")


class BenchmarkAppError(RuntimeError):
    """benchmark_app did not run, or printed no throughput."""


def app_arguments(xml: str | Path, seconds: float, precision: str | None = None,
                  threads: int | None = None, device: str = "CPU", batch: int = BATCH) -> list[str]:
    """benchmark_app's arguments for the kit's throughput settings."""
    args = ["-m", str(xml), "-d", device, "-b", str(batch), "-hint", HINT,
            "-t", str(max(1, math.ceil(seconds)))]
    if precision:
        args += ["-infer_precision", precision]
    if threads:
        args += ["-nthreads", str(int(threads))]
    return args


def parse_output(text: str) -> dict[str, Any]:
    """images/s, iterations and duration from benchmark_app's report (raises if absent)."""
    match = _THROUGHPUT.search(text)
    if match is None:
        last = [line for line in text.strip().splitlines() if line.strip()][-1:] or ["no output"]
        raise BenchmarkAppError(f"benchmark_app printed no 'Throughput: ... FPS' line "
                                f"(last line: {last[0][:300]})")
    count, duration = _COUNT.search(text), _DURATION.search(text)
    return {"images_per_second": float(match.group(1).replace(",", "")),
            "iterations": int(count.group(1)) if count else None,
            "duration_ms": float(duration.group(1)) if duration else None}


def run_benchmark_app(xml: str | Path, seconds: float, precision: str | None = None,
                      threads: int | None = None, device: str = "CPU",
                      timeout: float = 300.0) -> dict[str, Any]:
    """Run benchmark_app once; a result dict with ``status`` ``ok`` or ``failed`` (and why)."""
    args = app_arguments(xml, seconds, precision, threads, device)
    result: dict[str, Any] = {"status": "ok", "error": None, "batch": BATCH, "hint": HINT,
                              "seconds": int(args[args.index("-t") + 1]),
                              "precision": precision, "threads": threads or "default",
                              "command": "benchmark_app " + " ".join(args),
                              "images_per_second": None, "iterations": None,
                              "duration_ms": None}
    from benchmarks.worker import REPO, _env

    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.openvino_app", *args],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=_env(None))
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise BenchmarkAppError(f"benchmark_app exited with code {proc.returncode}: "
                                    + " | ".join(tail)[:500])
        result.update(parse_output(proc.stdout + proc.stderr))
    except subprocess.TimeoutExpired:
        result.update(status="failed", error=f"benchmark_app timed out after {timeout:.0f} s")
    except (OSError, BenchmarkAppError) as exc:
        result.update(status="failed", error=str(exc))
    return result


def ratio(kit_images_per_second: float | None, app: dict[str, Any] | None) -> float | None:
    """kit / benchmark_app images/s (None when either is missing)."""
    theirs = (app or {}).get("images_per_second")
    if not kit_images_per_second or not theirs:
        return None
    return float(kit_images_per_second) / float(theirs)


def main(argv: list[str]) -> int:
    """benchmark_app with openvino's telemetry off (see the module docstring)."""
    from runtime.engines.openvino_engine import import_openvino

    import_openvino()
    from openvino.tools.benchmark.main import main as benchmark_app

    sys.argv = ["benchmark_app", *argv]
    return benchmark_app() or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
