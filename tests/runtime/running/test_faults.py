"""Proof under faults: a run killed (SIGKILL) at random points five times over a few thousand real
X-ray files loses and duplicates nothing once resumed; a second run started into the same folder
is refused while the first finishes. (Two reviewers in two processes: tests/runtime/clinic/
test_review.py; a model answering NaN: test_bad_output.py.)"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.running.lock import EXIT_BUSY
from runtime.running.results import read_rows
from tests.runtime.helpers import REPO, runtime_env

COPIES = 3  # x the 624 Kermany test X-rays (224 px JPEGs): 1,872 files
KILLS = 5


@pytest.fixture(scope="module")
def many(data_dir: Path, tmp_path_factory) -> Path:
    """A few thousand small real X-rays (hard links where the file system allows, else copies)."""
    folder = tmp_path_factory.mktemp("many")
    sources = sorted((data_dir / "kermany_test_224").rglob("*.jpeg"))
    for copy in range(COPIES):
        target = folder / f"batch{copy}"
        target.mkdir()
        for path in sources:
            name = target / f"{path.parent.name}_{path.name}"
            try:
                os.link(path, name)
            except OSError:
                shutil.copy(path, name)
    return folder


def _start(folder: Path, bundle: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runtime", "triage", str(folder), "--bundle",
                             str(bundle), "--out", str(out), "--batch", "16", "--workers", "2",
                             "--quiet"], cwd=REPO, env=runtime_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _lines(csv_path: Path) -> int:
    try:
        return max(0, csv_path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def _wait_for_lines(proc: subprocess.Popen, csv_path: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while _lines(csv_path) < count and proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("triage wrote no rows in time")
        time.sleep(0.005)


def test_five_random_sigkills_then_resume_lose_and_duplicate_nothing(many, cpu_bundle, tmp_path):
    total = sum(1 for p in many.rglob("*") if p.is_file())
    out = tmp_path / "out"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    killed_at = []
    for _ in range(KILLS):
        done = _lines(out / "results.csv")
        target = rng.randint(done + 1, done + (total - done) // 3)  # a random row to pass
        proc = _start(many, cpu_bundle, out)
        _wait_for_lines(proc, out / "results.csv", target)
        time.sleep(rng.uniform(0, 0.05))  # and a random moment after it (mid-write, mid-batch)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, (seed, proc.stderr.read())
        killed_at.append(_lines(out / "results.csv"))
    assert killed_at[-1] < total, f"seed {seed}: the run ended before the last kill"
    final = _start(many, cpu_bundle, out)
    stdout, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, (seed, stderr)
    history = read_rows(out / "results.csv", history=True)
    paths = [r["path"] for r in history]
    assert len(paths) == len(set(paths)) == total, f"seed {seed}, killed at {killed_at}"
    assert {r["status"] for r in history} == {"ok"}
    assert "Took over the results folder from a run that had stopped" in stdout


def test_a_second_run_into_the_folder_is_refused_while_the_first_runs(many, cpu_bundle,
                                                                     tmp_path):
    out = tmp_path / "out"
    first = _start(many / "batch0", cpu_bundle, out)
    _wait_for_lines(first, out / "results.csv", 1)
    second = _start(many / "batch0", cpu_bundle, out)
    _, refused = second.communicate(timeout=120)
    assert first.poll() is None, "the first run ended before the second met its lock"
    assert second.returncode == EXIT_BUSY, refused
    assert f"is being written by process {first.pid}" in refused
    first.send_signal(signal.SIGTERM)  # a clean stop: what it wrote is all there, once
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    paths = [r["path"] for r in read_rows(out / "results.csv", history=True)]
    assert paths and len(paths) == len(set(paths))
