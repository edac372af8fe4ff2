"""``python -m benchmarks load``: the load-test harness on a few real X-rays (never timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.load_test import JSON_NAME, MD_NAME, summary_text, verdict

pytest.importorskip("fastapi")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def load_run(cpu_bundle: Path, data_dir: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("load-test")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "load", "--bundle", str(cpu_bundle), "--images",
         str(data_dir / "cxr_samples"), "--limit", "8", "--requests", "12", "--concurrency", "1",
         "4", "--malformed", "11", "--seconds", "60", "--out", str(out), "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    return done, out


def test_the_run_writes_its_report(load_run):
    done, out = load_run
    assert done.returncode in (0, 1), done.stderr  # 1 only when a check failed (memory on a
    report = json.loads((out / JSON_NAME).read_text())  # short run is not judged here)
    assert (out / MD_NAME).read_text().startswith("# Load test")
    assert f"wrote {out / JSON_NAME}" in done.stdout
    service = report["service"]
    assert [lv["concurrency"] for lv in service["levels"]] == [1, 4]
    for level in service["levels"]:
        assert level["requests"] == 12 and level["failed"] == 0
        assert level["correctness"]["compared"] == 12 and level["correctness"]["agree"]
        assert level["requests_per_second"] > 0
        assert 0 < level["latency_ms"]["p50"] <= level["latency_ms"]["p99"]
    assert report["triage"]["status"] == "ok" and report["triage"]["images"] == 8
    burst = service["burst"]
    assert burst["sent"] == 11 and burst["failed"] == 0 and len(burst["kinds"]) == 11
    assert set(burst["by_status"]) <= {"400", "401", "413", "422"}
    assert burst["after"]["correctness"]["agree"] and burst["after"]["health"] == 200
    assert service["rss_end_mib"] > 0 and service["clean_shutdown"]
    checks = report["verdict"]["checks"]
    assert all(ok for name, ok in checks.items() if name != "memory flat")
    assert "| 4 | 12 | 0 |" in summary_text(report)


def test_the_verdict_names_what_failed():
    level = {"failed": 1, "correctness": {"agree": True}}
    report = {"service": {"levels": [level], "memory": {"flat": True},
                          "burst": {"failed": 0, "after": {"ok": 3, "requests": 3, "health": 200,
                                                           "correctness": {"agree": True}}}}}
    result = verdict(report)
    assert not result["passed"]
    assert [k for k, ok in result["checks"].items() if not ok] == ["zero failed requests"]
    level["failed"] = 0
    assert verdict(report)["passed"]


def test_help():
    done = subprocess.run([sys.executable, "-m", "benchmarks", "load", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--concurrency" in done.stdout
