"""The benchmark harness over real bundles: rows, consistency, failures, report files.

Timings are never asserted (the machine is shared); only that they were measured and hang
together.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.benchmarks.conftest import CORRUPTED, CRASHING, E2E_IMAGES, QUICK_REPEATS, manifest_of

pytestmark = pytest.mark.slow  # builds bundles, then one quick benchmark run (~2 min on 2 cores)

BATCHES = ("1", "8", "32", "64")


def _rows(section: dict) -> dict[str, dict]:
    return {row["name"]: row for row in section["rows"]}


def _broken(sections: dict, broken_bundle: Path) -> dict:
    return next(s for s in sections.values() if Path(s["path"]) == broken_bundle)


def test_exit_code_says_failure_and_reports_are_written(quick_run):
    code, report, out = quick_run
    assert code == 1  # the broken copy fails two rows; the reports are written all the same
    assert (out / "report.json").is_file() and (out / "report.md").is_file()
    assert report["summary"]["failed"] == 2
    assert report["settings"]["quick"] is True and report["settings"]["repeats"] == QUICK_REPEATS


def test_every_artifact_and_the_baseline_get_a_row(sections, bench_dist, broken_bundle):
    expected = {"gpu": bench_dist / "gpu", "cpu": bench_dist / "cpu", "arm": bench_dist / "arm"}
    for label, path in expected.items():
        section = sections[label]
        assert section["status"] == "ok" and section["target"] == label
        names = [row["name"] for row in section["rows"]]
        assert names[0] == "pytorch-fp32" and section["rows"][0]["kind"] == "baseline"
        assert names[1:] == [a.path for a in manifest_of(path).artifacts]
        assert all(row["verdict"] for row in section["rows"])
    broken = _broken(sections, broken_bundle)
    assert [r["name"] for r in broken["rows"][1:]] == \
        [a.path for a in manifest_of(broken_bundle).artifacts]


def test_sections_name_their_test_data_and_copy_the_builds_gate_facts(sections, bench_dist):
    from tests.conftest import REFERENCE_CONFIG

    for label in ("gpu", "cpu", "arm"):
        section, manifest = sections[label], manifest_of(bench_dist / label)
        # the reference model is a config: its [data] test is the benchmark's test data
        assert section["dataset"] == "config" and manifest.provenance.dataset is None
        assert section["model_config"] == "models/reference/model.toml"
        assert manifest.provenance.model_config == str(REFERENCE_CONFIG)
        assert section["test_data"] == "pneumoniamnist.npz (test)"
        for row in section["rows"][1:]:
            entry = manifest.artifact(row["name"])
            assert row["build"]["gate"] == entry.gate.status == row["gate"]
            assert row["build"]["parity_max_abs_diff"] == entry.parity.max_abs_diff
            assert row["build"]["level"] == entry.build.attempts[-1].level
            assert row["build"]["drops"]["sensitivity"] == entry.gate.sensitivity_drop


def test_timed_rows_hold_consistent_measured_numbers(sections):
    for label in ("cpu", "gpu"):
        for row in sections[label]["rows"]:
            assert row["status"] == "ok", (label, row["name"], row["error"])
            lat = row["latency_ms"]
            assert lat["runs"] == QUICK_REPEATS and lat["batch"] == 1
            assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
            assert set(row["throughput"]) == set(BATCHES)
            for batch, point in row["throughput"].items():
                assert point["batch"] == int(batch) and point["images_per_second"] > 0
                assert point["batches"] >= 2 and point["seconds"] > 0
                assert point["images_per_second"] == pytest.approx(
                    point["batch"] * point["batches"] / point["seconds"])
            mem = row["memory"]
            assert 0 < mem["rss_after_load_mib"] <= mem["peak_rss_mib"]
            assert mem["peak_rss_mib"] <= mem["peak_rss_with_timing_mib"]
            assert mem["peak_rss_sampled_mib"] <= mem["peak_rss_with_timing_mib"] + 1.0
            assert row["load_ms"] > 0
            # what the engine reports it ran in: ONNX Runtime reads the precision the build wrote
            # into the model's metadata, OpenVINO the hint the manifest asked for
            ran = row["execution"]["inference_precision"]
            if row["engine"] == "onnxruntime":
                assert ran == row["precision"], (row["name"], ran)
            elif row["engine"] == "openvino":
                assert ran == "f32", (row["name"], ran)


def test_each_engine_is_timed_the_way_it_is_fastest_and_says_how(sections):
    for label in ("cpu", "gpu"):
        for row in sections[label]["rows"]:
            timing = row["execution"]["timing"]
            if row["engine"] == "openvino":
                assert timing["latency"]["hint"] == "LATENCY"
                assert timing["latency"]["api"] == "sync" and timing["latency"]["requests"] == 1
                assert timing["throughput"]["hint"] == "THROUGHPUT"
                assert timing["throughput"]["api"] == "async"
                assert timing["throughput"]["requests"] >= 1
            elif row["engine"] == "onnxruntime":  # CPU provider here (gpu: CPU fallback)
                tuning = timing["tuning"]
                tried = {c["config"]: c for c in tuning["candidates"]}
                assert len(tried) == 4 and "default" in tried
                for kind, batch in (("throughput", "b64"), ("latency", "b1")):
                    chosen = tuning[kind]
                    assert timing[kind]["config"] == chosen
                    assert tried[chosen][f"{batch}_images_per_second"] == max(
                        c[f"{batch}_images_per_second"] for c in tried.values())
            else:
                assert row["engine"] == "pytorch" and timing["throughput"]["api"] == "sync"


def test_openvino_artifacts_stand_beside_benchmark_app_on_the_same_ir(quick_run, sections,
                                                                      bench_dist):
    """benchmark_app really ran on each OpenVINO IR; its figure is parsed, the ratio computed."""
    _code, _report, out = quick_run
    rows = [r for r in sections["cpu"]["rows"] if r["engine"] == "openvino"]
    assert {r["name"] for r in rows} == {"model.fp32.xml", "model.int8.xml"}
    for row in rows:
        app = row["benchmark_app"]
        assert app["status"] == "ok", app["error"]
        assert str(bench_dist / "cpu" / row["name"]) in app["command"]
        assert " -b 64 " in app["command"] and " -hint throughput " in app["command"]
        assert app["precision"] == row["execution"]["timing"]["throughput"]["precision"]
        assert app["images_per_second"] > 0 and app["iterations"] >= 1
        assert app["images_per_second"] == pytest.approx(
            app["iterations"] * 64 / (app["duration_ms"] / 1e3), rel=0.01)
        kit = row["throughput"]["64"]["images_per_second"]
        assert app["kit_images_per_second"] == kit
        assert app["ratio"] == pytest.approx(kit / app["images_per_second"])
        assert sections["cpu"]["summary"]["benchmark_app_ratios"][row["name"]] == app["ratio"]
    assert all(r["benchmark_app"] is None for s in sections.values() for r in s["rows"]
               if r["engine"] != "openvino")
    md = (out / "report.md").read_text()
    assert "| artifact | kit img/s | benchmark_app img/s | kit / benchmark_app | command |" in md
    assert f"{rows[0]['benchmark_app']['ratio']:.2f}" in md


def test_sizes_are_the_files_on_disk(sections, bench_dist, reference_checkpoint):
    for label in ("cpu", "gpu", "arm"):
        root = bench_dist / label
        for row in sections[label]["rows"]:
            if row["kind"] == "baseline":
                assert row["size_bytes"] == reference_checkpoint.stat().st_size
                continue
            entry = manifest_of(root).artifact(row["name"])
            parts = [f.path for f in entry.all_files()]
            assert [f["path"] for f in row["files"]] == parts
            assert row["size_bytes"] == sum((root / p).stat().st_size for p in parts)


def _runtime_metrics(bundle: Path, artifact: str, data_dir: Path) -> dict:
    """What evaluation.metrics gives for this artifact, computed here independently."""
    from converters.data.pneumoniamnist import load_pneumoniamnist
    from evaluation.metrics import binary_metrics
    from runtime.bundle.load import load_bundle
    from runtime.preprocess.cpu import normalize, to_model_pixels

    loaded = load_bundle(bundle, artifact, device="cpu")
    test = load_pneumoniamnist(data_dir / "pneumoniamnist.npz").test
    spec = loaded.preprocessing
    pixels = test.images if test.images.shape[1:] == (spec.size, spec.size) else \
        np.stack([to_model_pixels(i, spec) for i in test.images])
    inputs = normalize(pixels, spec)
    probs = np.concatenate([loaded.predict_positive(inputs[s:s + 64]) for s in range(0, len(inputs), 64)])
    return binary_metrics(test.labels, probs, loaded.threshold).as_dict()


def test_quality_is_what_runtime_metrics_gives(sections, bench_dist, data_dir):
    for label in ("cpu", "gpu", "arm"):
        section = sections[label]
        baseline = section["rows"][0]["quality"]
        for row in section["rows"][1:]:
            expected = _runtime_metrics(bench_dist / label, row["name"], data_dir)
            got = row["quality"]
            assert got["split"] == "test" and got["n"] == expected["n"] == 624
            for key in ("tp", "fn", "tn", "fp"):
                assert got[key] == expected[key], (label, row["name"], key)
            for key in ("auc", "sensitivity", "specificity", "accuracy", "threshold"):
                assert got[key] == pytest.approx(expected[key], abs=1e-12)
            assert got["threshold"] == pytest.approx(section["threshold"])
            for key in ("auc", "sensitivity", "specificity", "accuracy"):
                assert row["quality_delta"][key] == pytest.approx(got[key] - baseline[key])
            # the manifest's numbers were measured by the converters with the same engine
            assert got["sensitivity"] == pytest.approx(row["manifest_metrics"]["sensitivity"],
                                                       abs=0.01)


def test_baseline_quality_matches_the_manifest_reference(sections):
    for label in ("cpu", "gpu"):
        row = sections[label]["rows"][0]
        reference = row["manifest_metrics"]
        for key in ("tp", "fn", "tn", "fp"):
            assert row["quality"][key] == reference[key]


def test_ratios_are_against_the_baseline_of_the_same_run(sections):
    for label in ("cpu", "gpu"):
        rows = sections[label]["rows"]
        base = rows[0]
        assert base["vs_pytorch"] is None
        for row in rows[1:]:
            vs = row["vs_pytorch"]
            assert vs["latency_p50_speedup"] == pytest.approx(
                base["latency_ms"]["p50"] / row["latency_ms"]["p50"])
            for batch in BATCHES:
                assert vs["throughput_ratio"][batch] == pytest.approx(
                    row["throughput"][batch]["images_per_second"]
                    / base["throughput"][batch]["images_per_second"])
            assert vs["size_ratio"] == pytest.approx(row["size_bytes"] / base["size_bytes"])
        best = [r for r in rows if r["best"]]
        assert len(best) == 1 and sections[label]["summary"]["best_artifact"] == best[0]["name"]


def test_gpu_target_is_labelled_as_cpu_fallback(sections):
    from runtime.preprocess.gpu import cuda_usable

    if cuda_usable()[0]:
        pytest.skip("CUDA works here: the gpu rows are real GPU numbers")
    section = sections["gpu"]
    assert any("CPU fallback" in note or "not a GPU figure" in note for note in section["notes"])
    for row in section["rows"][1:]:
        ex = row["execution"]
        assert ex["cpu_fallback"] is True
        assert ex["active"] == ["CPUExecutionProvider"]
        assert any("CUDA" in p for p in ex["manifest_providers"])
        assert "CPU fallback" in row["verdict"]


def test_arm_is_not_timed_on_this_host(sections):
    import platform

    if platform.machine().lower() in ("aarch64", "arm64"):
        pytest.skip("an ARM host times the arm target")
    section = sections["arm"]
    assert section["timed"] is False
    assert any("not timed" in note for note in section["notes"])
    for row in section["rows"]:
        assert row["status"] == "not-timed"
        assert row["latency_ms"] is None and row["throughput"] is None
        assert row["memory"] is None and row["e2e"] is None
        assert row["quality"]["n"] == 624  # quality is still measured, on this host
    for row in section["rows"][1:]:
        assert row["verdict"].startswith("not timed")


def test_failing_artifacts_are_reported_not_dropped(sections, broken_bundle):
    rows = _rows(_broken(sections, broken_bundle))
    corrupted, crashed = rows[CORRUPTED], rows[CRASHING]
    assert corrupted["status"] == "failed" and "sha256" in corrupted["error"]
    assert crashed["status"] == "failed" and "SIGABRT" in crashed["error"]
    for row in (corrupted, crashed):
        assert row["verdict"].startswith("FAILED")
        assert row["size_bytes"] is not None  # static facts are kept
        assert row["e2e"]["status"] == "skipped"
    assert rows["pytorch-fp32"]["status"] == "ok"


def test_end_to_end_beside_decode_only(sections, data_dir):
    for label in ("cpu", "gpu"):
        section = sections[label]
        decode = section["decode_only"]
        assert decode["status"] == "ok" and decode["images"] == E2E_IMAGES
        assert decode["errors"] == 0 and decode["images_per_second"] > 0
        for row in section["rows"][1:]:
            e = row["e2e"]
            assert e["status"] == "ok", e
            assert e["images"] == e["scored"] == E2E_IMAGES and e["errors"] == 0
            assert e["images_per_second"] > 0
            assert e["vs_decode_only"] == pytest.approx(
                e["images_per_second"] / decode["images_per_second"])
        assert section["rows"][0]["e2e"] is None  # PyTorch has no triage entry point


def test_machine_facts(quick_run):
    _code, report, _out = quick_run
    machine = report["machine"]
    cpu = machine["cpu"]
    # the facts are this host's, read here independently of benchmarks.machine
    assert cpu["logical_cpus"] == os.cpu_count()
    assert cpu["usable_cpus"] == len(os.sched_getaffinity(0))
    cpuinfo = Path("/proc/cpuinfo").read_text()
    flags = set(next(line for line in cpuinfo.splitlines() if line.startswith("flags"))
                .split(":", 1)[1].split())
    assert cpu["flags"]["avx2"] == ("avx2" in flags)
    assert cpu["flags"]["avx512"] == ("avx512f" in flags)
    assert cpu["flags"]["vnni"] == bool({"avx512_vnni", "avx_vnni"} & flags)
    assert cpu["model"] in cpuinfo
    assert machine["versions"]["numpy"] == np.__version__
    assert machine["versions"]["python"] == platform.python_version()
    if shutil.which("nvidia-smi") is None:
        assert machine["gpus"] == []
    assert len(machine["load_average_start"]) == 3


def test_markdown_and_charts(quick_run, sections):
    _code, report, out = quick_run
    md = (out / "report.md").read_text()
    for label, section in sections.items():
        assert f"## {label}:" in md
        for row in section["rows"][1:]:
            assert f"`{row['name']}`" in md
        for chart in section["charts"].values():
            path = out / chart
            assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"({chart})" in md
    assert set(sections["cpu"]["charts"]) == {"speed", "quality"}
    assert set(sections["arm"]["charts"]) == {"quality"}  # nothing timed, no speed chart
    assert "× PyTorch p50" in md and "PyTorch FP32 (baseline)" in md
    assert md.count("| artifact | format / precision |") == len(sections)
    json.loads((out / "report.json").read_text())  # valid JSON (no NaN)


def test_published_figures_are_a_labelled_reference(quick_run):
    """A resnet18_small bundle gets the UdaciMed figures as a reference, never as a measurement."""
    from benchmarks.report import render_markdown
    from benchmarks.suite import _published

    _code, report, _out = quick_run
    report = copy.deepcopy(report)
    section = next(s for s in report["bundles"] if s["label"] == "gpu")
    section["model"]["architecture"] = "resnet18_small"
    section["model"]["config"] = {"width": 8}
    section["published_reference"] = _published(section)
    md = render_markdown(report)
    assert "Published reference, not our measurement" in md
    assert "UdaciMed published (not measured here) | 3.74 | 268 | 4,010 | 21.3 (FP16)" in md
    assert "width 8" in md
    assert all(row["name"] != "published" for row in section["rows"])  # not a measured row
