"""The Ray comparison harness (python -m benchmarks ray) without running Ray: its CLI, the row
comparison it reports, and the README block generated from its report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.ray_compare import compare_rows
from benchmarks.readme import Sources, ray_comparison
from runtime.running.results import ResultsWriter, Row

REPO = Path(__file__).resolve().parents[2]


def _benchmarks(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_help_and_bad_input():
    run = _benchmarks("ray", "--help")
    assert run.returncode == 0 and "--actors" in run.stdout and "single-process" in run.stdout
    run = _benchmarks("ray", "--folder", str(REPO / "no-such-folder"))
    assert run.returncode == 2 and "image folder not found" in run.stderr


def _results(folder: Path, probabilities: dict[str, float]) -> Path:
    with ResultsWriter(folder) as writer:
        for path, p in probabilities.items():
            writer.write(Row(path, "ok", "NORMAL", p, False, 1.0, "", 224, 224, "jpeg", "in",
                             "ok"))
        writer.write(Row("broken.jpeg", "error", error="image data is damaged"))
    return folder / "results.csv"


def test_compare_rows_finds_a_changed_probability(tmp_path):
    single = _results(tmp_path / "single", {"a.jpeg": 0.25, "b.jpeg": 0.5})
    same = compare_rows(_results(tmp_path / "same", {"b.jpeg": 0.5, "a.jpeg": 0.250001}), single)
    assert same["same"] and same["max_abs_probability_diff"] <= 1.01e-6
    moved = compare_rows(_results(tmp_path / "moved", {"a.jpeg": 0.26, "b.jpeg": 0.5}), single)
    assert not moved["same"] and abs(moved["max_abs_probability_diff"] - 0.01) < 1e-9
    missing = compare_rows(_results(tmp_path / "missing", {"a.jpeg": 0.25}), single)
    assert not missing["same"] and missing["rows_differing"] == 1


def test_readme_block_shows_every_run_with_its_ratio():
    report = {
        "created_at": "2026-01-01T00:00:00+00:00", "command": "python -m benchmarks ray",
        "machine": {"cpu": {"model": "CPU", "usable_cpus": 2}, "load_average_before": [1.0],
                    "load_average_after": [2.0]},
        "folder": "/data/kermany_train_224", "images": 100,
        "runs": [{"runner": "single-process", "status": "ok", "workers": 2,
                  "images_per_second": 50.0, "wall_s": 3.0},
                 {"runner": "ray", "actors": 2, "status": "ok", "images_per_second": 25.0,
                  "wall_s": 9.0, "ratio_to_single_process": 0.5, "driver_peak_rss_mib": 300.4,
                  "ray": {"ray_version": "2.x", "first_rows_after_s": 4.0,
                          "images_per_second_after_first_rows": 40.0},
                  "rows_match_single_process": {"same": True, "max_abs_probability_diff": 0.0,
                                                "rows_differing": 0}},
                 {"runner": "ray", "actors": 4, "status": "failed", "error": "boom"}]}
    text = ray_comparison(Sources(report={}, card={}, ray=report))
    assert "| Ray, 2 engine actors | 25.0 | 0.50× | 40.0 | 4.0 s | 9 s | 300 MiB | same" in text
    assert "| Ray, 4 engine actors | failed: boom" in text and "load average 1.0\nbefore" in text


def _labelled(folder: Path, viral: float) -> Path:
    """A model with several findings: the row's probability is BACTERIAL's, VIRAL's is apart."""
    labels = ["NORMAL", "BACTERIAL", "VIRAL"]
    with ResultsWriter(folder, labels) as writer:
        writer.write(Row("a.jpeg", "ok", "NORMAL", 0.2, False, 1.0, "", 224, 224, "jpeg", "in",
                         "ok", probabilities={"NORMAL": 0.8 - viral, "BACTERIAL": 0.2,
                                              "VIRAL": viral}))
    return folder / "results.csv"


def test_compare_rows_reads_every_label_column(tmp_path):
    single = _labelled(tmp_path / "single", 0.05)
    assert compare_rows(_labelled(tmp_path / "same", 0.05), single)["same"]
    moved = compare_rows(_labelled(tmp_path / "moved", 0.10), single)  # only VIRAL (and NORMAL)
    assert not moved["same"] and abs(moved["max_abs_probability_diff"] - 0.05) < 1e-6
