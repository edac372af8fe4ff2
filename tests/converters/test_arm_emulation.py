"""The emulated aarch64 verification of the arm bundle (``python -m converters verify-emulated arm``).

Fast tests cover everything that does not need the emulator: host prerequisite checks and their
messages, wheel pins and tags, rootfs resume decisions, the comparison and report on real
probabilities from the x86 runtime, and the manifest update (the bundle must still load).

The one slow test runs the real verification; it needs root and the cached aarch64 rootfs
(prepared once with ``sudo python -m converters verify-emulated arm --prepare-only``, ~12 minutes), so CI skips
it: it is a release check (see README, "Verifying the arm bundle on emulated aarch64").
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from converters.__main__ import main as converters_main
from targets.__main__ import main as targets_main
from converters.emulation import compare, prereqs, rootfs, verify

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- host prerequisites

def test_missing_tools_and_root_are_all_reported_with_the_apt_command():
    problems = prereqs.check_tools(which=lambda name: None, euid=1000, machine="x86_64")
    text = prereqs.format_problems(problems)
    assert "not running as root" in text
    assert "qemu-aarch64-static not found" in text
    assert "debootstrap not found" in text
    assert prereqs.APT_FIX in text
    assert "sudo apt-get install -y qemu-user-static binfmt-support debootstrap" in text


def test_a_complete_host_has_no_problems():
    assert prereqs.check_tools(which=lambda name: f"/usr/bin/{name}", euid=0,
                               machine="x86_64") == []


def test_an_aarch64_host_is_told_to_run_natively():
    problems = prereqs.check_tools(which=lambda name: f"/usr/bin/{name}", euid=0,
                                   machine="aarch64")
    assert len(problems) == 1 and "already aarch64" in problems[0].what


def test_binfmt_entry_must_be_enabled(tmp_path):
    assert not prereqs.binfmt_registered(tmp_path)
    (tmp_path / "qemu-aarch64").write_text("disabled\ninterpreter /usr/bin/qemu-aarch64-static\n")
    assert not prereqs.binfmt_registered(tmp_path)
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/bin/qemu-aarch64-static\n")
    assert prereqs.binfmt_registered(tmp_path)


def test_bundle_problems_say_how_to_build_it(tmp_path, built_bundles):
    [missing] = prereqs.check_bundle(tmp_path / "nope")
    assert "no bundle" in missing.what and "converters build --target arm" in missing.fix
    [no_manifest] = prereqs.check_bundle(tmp_path)
    assert "no manifest.json" in no_manifest.what
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"schema_version": 1, "artifacts": [{"path": "model.int8.onnx"}]}))
    [old] = prereqs.check_bundle(tmp_path)
    assert "older kit (schema 1)" in old.what and "converters build" in old.fix
    bundle = tmp_path / "arm"
    shutil.copytree(built_bundles["arm"], bundle)
    assert prereqs.check_bundle(bundle) == []
    (bundle / "model.int8.onnx").unlink()
    [gone] = prereqs.check_bundle(bundle)
    assert "'model.int8.onnx'" in gone.what and "missing" in gone.what


def test_cli_refuses_a_missing_bundle_with_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prereqs, "ensure_binfmt", lambda *a, **k: [])  # no mounts from a test
    code = converters_main(["verify-emulated", "arm", "--bundle", str(tmp_path / "absent"),
                            "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"no bundle at {tmp_path / 'absent'}" in err
    assert "python -m converters build --target arm" in err
    assert not (tmp_path / "cache").exists()  # nothing prepared before the checks pass


def test_cli_unknown_and_unemulated_targets(capsys):
    assert converters_main(["verify-emulated", "armm"]) == 2
    assert "Did you mean 'arm'" in capsys.readouterr().err
    assert converters_main(["verify-emulated", "cpu"]) == 2
    assert "no emulated verification" in capsys.readouterr().err


def test_listing_stays_the_default(capsys):
    assert targets_main([]) == 0
    listed = capsys.readouterr().out
    assert targets_main(["list"]) == 0
    assert capsys.readouterr().out == listed
    assert "arm" in listed and "ort-int8" in listed


# --------------------------------------------------------------------------- wheels and rootfs state

def test_platform_tags_follow_the_chroot_glibc():
    tags = rootfs.platform_tags((2, 36))
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_35_aarch64" in tags
    assert tags[-1] == "manylinux2014_aarch64" and "manylinux_2_17_aarch64" in tags
    assert "manylinux_2_35_aarch64" not in rootfs.platform_tags((2, 31))  # bullseye: no OpenVINO
    cmd = rootfs.pip_download_command(Path("/w"), ["openvino==2026.4.1"], "3.11", (2, 36))
    assert ["--python-version", "3.11"] == cmd[cmd.index("--python-version"):][:2]
    assert "--only-binary=:all:" in cmd and cmd[-1] == "openvino==2026.4.1"


def test_pip_falling_back_to_an_old_openvino_is_caught():
    pins = ["openvino==2026.4.1", "numpy==2.4.6"]
    good = ["openvino-2026.4.1-22982-cp311-cp311-manylinux_2_35_aarch64.whl",
            "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl"]
    assert rootfs.check_wheels(good, pins) == []
    old = ["openvino-2023.0.0-10926-cp311-cp311-manylinux2014_aarch64.whl", good[1]]
    [problem] = rootfs.check_wheels(old, pins)
    assert "wanted 2026.4.1, pip picked 2023.0.0" in problem and "glibc" in problem
    x86 = [good[0], "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.whl"]
    assert any("not an aarch64 wheel" in p for p in rootfs.check_wheels(x86, pins))


def test_host_pins_map_onnxruntime_gpu_to_plain_onnxruntime():
    pins = dict(p.split("==") for p in rootfs.host_pins() if "==" in p)
    assert "onnxruntime-gpu" not in pins
    from importlib import metadata

    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            assert pins["onnxruntime"] == metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue


def test_half_done_rootfs_is_redone_and_a_finished_one_reused(tmp_path):
    fs = rootfs.Rootfs(cache=tmp_path, pins=["numpy==2.4.6"])
    assert not fs.is_ready()
    assert "half-done" in fs.why_fresh_base({})
    half = {"base_fingerprint": fs.base_fingerprint(), "stages": {"foreign": {}}}
    assert "half-done" in fs.why_fresh_base(half)
    done = {"base_fingerprint": fs.base_fingerprint(), "stages": {"foreign": {}, "base": {}}}
    assert "damaged" in fs.why_fresh_base(done)  # state says done, but no python3 in it
    (fs.root / "usr" / "bin").mkdir(parents=True)
    (fs.root / "usr" / "bin" / "python3").write_text("")
    assert fs.why_fresh_base(done) is None
    assert "forced" in fs.why_fresh_base(done, force=True)
    other = dict(done, base_fingerprint="0" * 16)
    assert "another Debian release" in fs.why_fresh_base(other)
    # the wheels stage depends on the pins, not on the base system
    assert fs.wheels_fingerprint() != rootfs.Rootfs(cache=tmp_path,
                                                    pins=["numpy==2.4.5"]).wheels_fingerprint()


def test_mounts_under_finds_only_the_chroot_mounts_deepest_first(tmp_path):
    info = tmp_path / "mountinfo"
    root = tmp_path / "rootfs"
    info.write_text("\n".join([
        "22 1 0:21 / /proc rw - proc proc rw",
        f"90 22 0:5 / {root}/proc rw - proc proc rw",
        f"91 22 0:6 / {root}/proc/sys/fs/binfmt_misc rw - binfmt_misc x rw",
        f"92 22 0:7 / {tmp_path}/rootfs-other/sys rw - sysfs sysfs rw",
    ]) + "\n")
    assert rootfs.mounts_under(root, info) == [root / "proc/sys/fs/binfmt_misc", root / "proc"]


def test_chroot_env_sets_the_cpu_model_for_openvino(tmp_path):
    env = rootfs.Rootfs(cache=tmp_path, pins=[]).env()
    assert env["QEMU_CPU"] == "neoverse-n1"
    assert env["PYTHONPATH"] == rootfs.KIT and env["PATH"].startswith(rootfs.VENV)


# --------------------------------------------------------------------------- images and jobs

def test_sample_takes_both_classes_evenly_and_deterministically(data_dir):
    source = data_dir / "kermany_test_224"
    picked = verify.sample_images(source, 9)
    assert {k: len(v) for k, v in picked.items()} == {"NORMAL": 5, "PNEUMONIA": 4}
    assert picked == verify.sample_images(source, 9)
    assert all(p.parent.name == cls for cls, files in picked.items() for p in files)


def test_jobs_cover_every_artifact_and_an_openvino_check_on_onnx():
    from types import SimpleNamespace as Typed  # stands in for runtime.contract.Manifest

    manifest = Typed(artifacts=[Typed(path="model.int8.onnx", engine="onnxruntime"),
                                Typed(path="model.int8.ort", engine="onnxruntime")])
    jobs = verify.plan_jobs(manifest, openvino_check=True, extra_onnx=[Path("/x/model.fp32.onnx")])
    assert [(j.artifact, j.engine, j.in_bundle) for j in jobs] == [
        ("model.int8.onnx", "onnxruntime", True), ("model.int8.ort", "onnxruntime", True),
        ("model.int8.onnx", "openvino", False), ("/x/model.fp32.onnx", "openvino", False)]
    assert len(verify.plan_jobs(manifest, openvino_check=False)) == 2


def test_runtime_command_uses_triage_cli_or_the_fallback():
    triage = verify.runtime_command("py", "/kit", "/img", "/b", "m.onnx", "/o", use_triage=True)
    assert triage == ["py", "-m", "runtime", "triage", "/img", "--bundle", "/b",
                      "--artifact", "m.onnx", "--out", "/o"]
    forced = verify.runtime_command("py", "/kit", "/img", "/b", "m.onnx", "/o", use_triage=True,
                                    engine="openvino")
    assert forced[1] == "/kit/converters/emulation/triage_fallback.py"
    assert forced[-2:] == ["--engine", "openvino"]


# --------------------------------------------------------------------------- real probabilities

@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory, built_bundles):
    """A bundle holding the reference model as FP32 ONNX: a copy of the session's gpu bundle."""
    out = tmp_path_factory.mktemp("bundle") / "gpu"
    shutil.copytree(built_bundles["gpu"], out)
    return out


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory, data_dir):
    dest = tmp_path_factory.mktemp("images")
    verify.copy_images(verify.sample_images(data_dir / "kermany_test_224", 24), dest)
    return dest


def _fallback_run(bundle: Path, images: Path, out: Path, engine: str | None = None) -> Path:
    cmd = verify.runtime_command(sys.executable, str(REPO), str(images), str(bundle),
                                 "model.fp32.onnx", str(out), use_triage=False, engine=engine)
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO,
                   env=dict(os.environ, PYTHONPATH=str(REPO)))
    return out / "results.csv"


@pytest.fixture(scope="module")
def x86_results(fp32_bundle, sample_dir, tmp_path_factory):
    """The x86 runtime's answers on 24 real Kermany test images, with ONNX Runtime and OpenVINO."""
    out = tmp_path_factory.mktemp("runs")
    return (_fallback_run(fp32_bundle, sample_dir, out / "ort"),
            _fallback_run(fp32_bundle, sample_dir, out / "ov", engine="openvino"))


def test_same_model_on_two_engines_agrees(x86_results):
    ort_csv, ov_csv = x86_results
    ort, ov = compare.read_results(ort_csv), compare.read_results(ov_csv)
    assert len(ort) == 24 and {r.status for r in ort.values()} == {"ok"}
    assert {k.split("/")[0] for k in ort} == {"NORMAL", "PNEUMONIA"}
    result = compare.compare_results(ort, ov, artifact="model.fp32.onnx", engine="openvino")
    assert result.n_images == 24 and result.agreement == 1.0
    assert result.max_abs_diff < 1e-4 and result.passed
    assert result.worst[0]["abs_diff"] == pytest.approx(result.max_abs_diff)


def _with_change(path: Path, dest: Path, change) -> Path:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    change(rows)
    with open(dest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return dest


def test_a_flipped_decision_and_an_error_fail_the_comparison(x86_results, tmp_path):
    ort_csv, _ = x86_results
    host = compare.read_results(ort_csv)

    def flip(rows):  # the most confident NORMAL row comes back as a flagged PNEUMONIA
        row = min(rows, key=lambda r: float(r["probability"]))
        row.update(probability="0.97", flagged="true", prediction="PNEUMONIA")
        rows[-1].update(status="error", probability="", flagged="", error="DecodeError: bad")

    emulated = compare.read_results(_with_change(ort_csv, tmp_path / "emu.csv", flip))
    result = compare.compare_results(host, emulated, artifact="m", engine="onnxruntime")
    assert result.n_images == 23 and result.agreement == pytest.approx(22 / 23)
    assert result.max_abs_diff > 0.9 and not result.passed
    assert len(result.disagreements) == 1 and len(result.errors) == 1
    missing = compare.compare_results(host, dict(list(emulated.items())[:5]), artifact="m",
                                      engine="onnxruntime")
    assert missing.missing and not missing.passed


def test_tolerance_is_on_the_probability(x86_results, tmp_path):
    ort_csv, _ = x86_results

    def nudge(rows):
        for row in rows:
            p = float(row["probability"])
            row["probability"] = f"{p + (0.004 if p < 0.5 else -0.004):.8f}"

    host = compare.read_results(ort_csv)
    emulated = compare.read_results(_with_change(ort_csv, tmp_path / "n.csv", nudge))
    loose = compare.compare_results(host, emulated, artifact="m", engine="e", tolerance=0.01)
    strict = compare.compare_results(host, emulated, artifact="m", engine="e", tolerance=0.001)
    assert loose.passed and not strict.passed
    assert loose.max_abs_diff == pytest.approx(0.004, abs=1e-6)
    assert loose.resolution == pytest.approx(5e-9)  # the fallback writes 8 decimals


def test_report_and_manifest_update_keep_the_bundle_loadable(x86_results, fp32_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, bundle)
    before = json.loads((bundle / "manifest.json").read_text())
    ort_csv, ov_csv = x86_results
    rows = compare.read_results(ort_csv)
    results = [compare.compare_results(rows, rows, artifact="model.fp32.onnx",
                                       engine="onnxruntime"),
               compare.compare_results(rows, compare.read_results(ov_csv),
                                       artifact="model.fp32.onnx", engine="openvino",
                                       in_bundle=False)]
    env = {"qemu": "qemu-aarch64 version 7.2.22", "qemu_cpu": "neoverse-n1",
           "emulated": {"machine": "aarch64", "python": "3.11.2", "glibc": "2.36",
                        "debian": "12.12", "onnxruntime": "1.31.1", "openvino": "2026.4.1"},
           "host": verify.host_environment()}
    report = compare.build_report(results, environment=env, images={"n": 24, "source": "x"},
                                  command="python -m converters verify-emulated arm", started="s",
                                  finished="2026-11-23T11:00:00Z", setup={"base": 300.0},
                                  artifacts_sha256={a["path"]: a["sha256"]
                                                    for a in before["artifacts"]})
    assert report["passed"]
    json_path, md_path = compare.write_report(bundle, report)
    text = md_path.read_text()
    assert "PASSED" in text and "| model.fp32.onnx | openvino | check only |" in text
    assert json.loads(json_path.read_text())["results"][0]["agreement"] == 1.0

    verified = {a["path"]: a["sha256"] for a in before["artifacts"]}
    from runtime.bundle import load_bundle
    with pytest.raises(compare.CompareError, match="changed while it was being verified"):
        compare.update_manifest(bundle, compare.manifest_entry(report),
                                expect_sha256={"model.fp32.onnx": "0" * 64})
    assert json.loads((bundle / "manifest.json").read_text()) == before  # nothing recorded
    compare.update_manifest(bundle, compare.manifest_entry(report), reports=(json_path, md_path),
                            expect_sha256=verified)
    after = json.loads((bundle / "manifest.json").read_text())
    entry = after["verification"]["aarch64_emulated"]
    assert entry["passed"] and entry["qemu_cpu"] == "neoverse-n1" and entry["n_images"] == 24
    assert entry["onnxruntime"] == env["emulated"]["onnxruntime"]
    assert entry["python"] == env["emulated"]["python"]
    assert entry["artifacts"]["model.fp32.onnx"]["agreement"] == 1.0
    assert entry["artifacts"]["model.fp32.onnx"]["sha256"] == verified["model.fp32.onnx"]
    assert entry["engine_checks"]["openvino:model.fp32.onnx"]["passed"]
    assert {k: v for k, v in after.items() if k not in ("verification", "files")} == \
        {k: v for k, v in before.items() if k not in ("verification", "files")}  # the rest kept
    files = {f["path"] for f in before["files"]}
    assert {f["path"] for f in after["files"]} == files | {"verification.json", "verification.md"}
    # the runtime verifies artifacts against the manifest: editing the manifest breaks nothing
    loaded = load_bundle(bundle, "model.fp32.onnx", device="cpu")
    assert loaded.manifest.verification["aarch64_emulated"]["passed"]
    # a second verification replaces the entry instead of piling up
    compare.update_manifest(bundle, dict(entry, passed=False), reports=(json_path, md_path))
    again = json.loads((bundle / "manifest.json").read_text())
    assert not again["verification"]["aarch64_emulated"]["passed"]
    assert len(again["files"]) == len(files) + 2


# --------------------------------------------------------------------------- the real thing (slow)

def _release_bundle(tmp_path: Path) -> Path | None:
    for candidate in (os.environ.get("CXR_ARM_BUNDLE"), REPO / "dist" / "arm"):
        if candidate and (Path(candidate) / "manifest.json").is_file():
            dest = tmp_path / "arm"
            shutil.copytree(candidate, dest)
            return dest
    return None


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not rootfs.Rootfs().is_ready() or os.geteuid() != 0,
                    reason="needs root and the cached aarch64 rootfs (sudo python -m converters "
                           "verify-emulated arm --prepare-only, ~12 min): a release check, not CI")
def test_arm_bundle_gives_the_same_answers_on_emulated_aarch64(tmp_path, data_dir):
    bundle = _release_bundle(tmp_path)
    if bundle is None:
        pytest.skip("no arm bundle: python -m converters build --target arm --out dist")
    code = converters_main(["verify-emulated", "arm", "--bundle", str(bundle), "--images", "16",
                         "--images-dir", str(data_dir / "kermany_test_224")])
    report = json.loads((bundle / "verification.json").read_text())
    assert code == 0, report
    assert report["passed"] and report["environment"]["emulated"]["machine"] == "aarch64"
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["verification"]["aarch64_emulated"]
    shipped = {a["path"] for a in manifest["artifacts"]}
    assert set(entry["artifacts"]) == shipped
    assert all(a["agreement"] == 1.0 and a["n_images"] == 16 for a in entry["artifacts"].values())
