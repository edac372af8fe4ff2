"""Harness pieces without models: the worker protocol, failures, measuring loops, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import worker
from benchmarks.measure import Settings, latency, percentiles, quality_delta, throughput

REPO = Path(__file__).resolve().parents[2]


def test_percentiles_are_ordered():
    stats = percentiles([5.0, 1.0, 3.0, 2.0, 100.0, 4.0])
    assert stats["min"] <= stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["max"]
    assert stats["runs"] == 6
    with pytest.raises(ValueError):
        percentiles([])


def test_measuring_loops_call_the_model_as_asked():
    calls: list[int] = []
    inputs = np.zeros((10, 1, 4, 4), np.float32)
    settings = Settings(repeats=7, warmup=4, min_seconds=0.0, min_runs=3)
    result = latency(lambda b: calls.append(len(b)), inputs, settings)
    assert result["runs"] == 7 and calls == [1] * 11
    calls.clear()
    point = throughput(lambda b: calls.append(len(b)), inputs, 32, settings)
    assert point["batches"] == 3 and calls == [32] * 4  # one warm-up batch + 3 timed
    assert point["images_per_second"] > 0


def test_throughput_waits_for_batches_still_in_flight():
    """An async runner: the clock stops only after drain(); warm-up work is drained first."""
    events: list[str] = []
    settings = Settings(repeats=1, warmup=8, min_seconds=0.0, min_runs=3)
    point = throughput(lambda b: events.append("run"), np.zeros((4, 1, 2, 2), np.float32), 8,
                       settings, drain=lambda: events.append("drain"))
    assert events == ["run", "run", "drain", "run", "run", "run", "drain"]
    assert point["batches"] == 3


def test_benchmark_app_output_is_parsed_and_failures_are_plain():
    from benchmarks import openvino_app

    text = ("[ INFO ] Count:            864 iterations\n[ INFO ] Duration:         5017.22 ms\n"
            "[ INFO ] Throughput:   11,021.24 FPS\n")
    assert openvino_app.parse_output(text) == {"images_per_second": 11021.24,
                                               "iterations": 864, "duration_ms": 5017.22}
    with pytest.raises(openvino_app.BenchmarkAppError, match="no 'Throughput"):
        openvino_app.parse_output("[ ERROR ] Model file does not exist\n")
    assert openvino_app.ratio(900.0, {"images_per_second": 1000.0}) == pytest.approx(0.9)
    assert openvino_app.ratio(None, {"images_per_second": 1000.0}) is None
    args = openvino_app.app_arguments("m.xml", 0.1, precision="f32", threads=2)
    assert args == ["-m", "m.xml", "-d", "CPU", "-b", "64", "-hint", "throughput", "-t", "1",
                    "-infer_precision", "f32", "-nthreads", "2"]
    missing = openvino_app.run_benchmark_app("/nonexistent/model.xml", 1, timeout=120)
    assert missing["status"] == "failed" and "benchmark_app" in missing["error"]
    assert missing["images_per_second"] is None


def test_quality_delta():
    assert quality_delta({"auc": 0.9, "sensitivity": 0.95, "specificity": 0.7, "accuracy": 0.8},
                         {"auc": 0.91, "sensitivity": 0.97, "specificity": 0.6,
                          "accuracy": 0.8}) == pytest.approx(
        {"auc": -0.01, "sensitivity": -0.02, "specificity": 0.1, "accuracy": 0.0})
    assert quality_delta(None, {"auc": 1.0}) is None


def test_a_crashing_worker_becomes_a_failed_result(monkeypatch):
    monkeypatch.setattr(worker, "worker_command",
                        lambda: [sys.executable, "-c", "import os, sys; sys.stdin.read(); "
                                                       "print('boom', file=sys.stderr); os.abort()"])
    result = worker.run_worker({"kind": "artifact"}, timeout=60)
    assert result["status"] == "failed"
    assert "SIGABRT" in result["error"] and "boom" in result["error"]
    assert "boom" in result["worker"]["stderr_tail"]


def test_a_hanging_worker_is_killed_and_reported(monkeypatch):
    monkeypatch.setattr(worker, "worker_command",
                        lambda: [sys.executable, "-c", "import time; time.sleep(60)"])
    result = worker.run_worker({"kind": "artifact"}, timeout=1)
    assert result["status"] == "failed" and "timed out" in result["error"]


def test_worker_reports_exceptions_with_the_result_line():
    result = worker.run_worker({"kind": "artifact", "bundle": "/nonexistent/bundle",
                                "artifact": None, "settings": Settings.quick().as_dict()},
                               timeout=120)
    assert result["status"] == "failed"
    assert "BundleError" in result["error"] and "not found" in result["error"]
    assert result["worker"]["returncode"] == 1


def test_library_noise_on_stdout_does_not_break_the_protocol(monkeypatch, tmp_path):
    script = tmp_path / "noisy.py"
    script.write_text("import sys, io\n"
                      "print('library chatter on stdout')\n"
                      "sys.stdin = io.StringIO(sys.stdin.read())\n"
                      "import benchmarks.worker as w\n"
                      "w.JOBS['noise'] = lambda job, result: (print('more chatter'), "
                      "result.update(value=42))\n"
                      "sys.exit(w.main())\n")
    monkeypatch.setattr(worker, "worker_command", lambda: [sys.executable, str(script)])
    result = worker.run_worker({"kind": "noise"}, timeout=60)
    assert result["status"] == "ok" and result["value"] == 42


def test_missing_bundle_is_reported_and_fails_the_run(tmp_path):
    from benchmarks.__main__ import main

    out = tmp_path / "reports"
    code = main(["run", "--bundle", str(tmp_path / "no-such-bundle"), "--out", str(out),
                 "--no-e2e", "--quiet"])
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert report["bundles"][0]["status"] == "missing"
    assert "MISSING" in (out / "report.md").read_text()


def test_help_works_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for option in ("--target", "--bundle", "--out", "--repeats", "--quick", "--checkpoint"):
        assert option in proc.stdout


def _row(name, kind="artifact", p50=1.0, b64=100.0, sens=0.99, spec=0.7, status="ok"):
    return {"name": name, "kind": kind, "status": status, "error": None,
            "latency_ms": {"p50": p50, "p99": p50 * 2},
            "throughput": {"1": {"batch": 1, "images_per_second": 1000 / p50},
                           "64": {"batch": 64, "images_per_second": b64}},
            "memory": {"peak_rss_mib": 100.0}, "size_bytes": 1000, "execution": {},
            "quality": {"auc": 0.95, "sensitivity": sens, "specificity": spec, "accuracy": 0.9},
            "is_default": False, "best": False, "e2e": None}


def test_best_artifact_respects_the_sensitivity_gate_and_verdicts_say_why():
    from benchmarks.suite import _compare

    baseline = _row("pytorch-fp32", "baseline", p50=10.0, b64=100.0, sens=0.99)
    fast_but_worse = _row("fast.onnx", p50=1.0, b64=5000.0, sens=0.97)  # -2 pp > 0.5 pp gate
    good = _row("good.xml", p50=2.0, b64=1000.0, sens=0.99)
    slower = _row("slow.onnx", p50=20.0, b64=50.0, sens=0.99)
    broken = _row("broken.onnx", status="failed")
    broken["error"] = "BundleError: sha256 mismatch\nmore"
    section = {"rows": [baseline, fast_but_worse, good, slower, broken],
               "gate_max_sensitivity_drop": 0.005, "decode_only": None}
    _compare(section, baseline)
    assert good["best"] and not fast_but_worse["best"]
    assert section["summary"]["best_artifact"] == "good.xml"
    assert good["vs_pytorch"]["latency_p50_speedup"] == pytest.approx(5.0)
    assert good["vs_pytorch"]["throughput_ratio"]["64"] == pytest.approx(10.0)
    assert "5.0× faster at batch 1" in good["verdict"] and "best of this bundle" in good["verdict"]
    assert "beyond the 0.5 pp gate" in fast_but_worse["verdict"]
    assert "-2.0 pp" in fast_but_worse["verdict"]
    assert "2.0× slower at batch 1" in slower["verdict"]
    assert broken["verdict"] == "FAILED: BundleError: sha256 mismatch"
    assert broken.get("vs_pytorch") is None
    assert section["summary"]["failed"] == 1


def test_bundles_are_labelled_and_deduplicated(tmp_path):
    from benchmarks.suite import Options, resolve_bundles

    dist = tmp_path / "dist"
    options = Options(targets=["cpu", "gpu"], dist=dist,
                      bundles=[dist / "cpu", tmp_path / "dist-resnet" / "gpu"])
    refs = resolve_bundles(options)
    assert [r.label for r in refs] == ["cpu", "gpu", "dist-resnet-gpu"]


def test_both_models_side_by_side_per_target(tmp_path):
    from benchmarks.suite import Options, resolve_bundles

    dist = tmp_path / "dist"
    refs = resolve_bundles(Options(targets=["gpu", "cpu"], models=["tiny", "clinical"], dist=dist))
    assert [(r.label, r.path) for r in refs] == [
        ("gpu", dist / "gpu"), ("clinical-gpu", dist / "clinical" / "gpu"),
        ("cpu", dist / "cpu"), ("clinical-cpu", dist / "clinical" / "cpu")]


def test_a_bundle_without_its_dataset_is_refused_with_the_rebuild_command(cpu_bundle, tmp_path):
    """A manifest from before provenance.dataset: its test images are unknown, so no row is
    measured (no guessing PneumoniaMNIST for a 128 px Kermany model)."""
    import shutil

    from benchmarks.suite import CheckpointFinder, Options, benchmark_bundle, resolve_bundles

    bundle = tmp_path / "old" / "cpu"
    shutil.copytree(cpu_bundle, bundle)
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    for key in ("dataset", "model_config", "model_config_sha256"):  # neither data nor config
        manifest["provenance"].pop(key, None)
    path.write_text(json.dumps(manifest))
    options = Options(bundles=[bundle])
    (ref,) = resolve_bundles(options)
    said: list[str] = []
    section = benchmark_bundle(ref, options, CheckpointFinder([]), {}, said.append)
    assert section["status"] == "failed" and section["rows"] == []
    assert "records no provenance.dataset" in section["error"]
    assert "python -m converters build --target cpu" in section["error"]
    assert said == [f"old-cpu: {section['error']}"]


def test_machine_facts_come_from_this_host():
    from benchmarks import machine

    cpu = machine.cpu_facts()
    assert cpu["logical_cpus"] >= 1 and cpu["architecture"]
    text = machine.flag_summary(cpu)
    assert text.startswith("AVX2 ") and "VNNI" in text
    assert machine.versions()["python"]
