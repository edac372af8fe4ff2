"""The emulated aarch64 verification of the arm bundle (``python -m converters verify-emulated arm``).

Fast tests cover everything that does not need the emulator: host prerequisite checks and their
messages, wheel pins and tags, rootfs resume decisions, which kit packages the chroot gets, the
comparison and report on real probabilities from ``python -m runtime triage`` on this host (ONNX
Runtime and, through an engine-check bundle, OpenVINO), and the manifest update (the bundle must
still load).

The slow test runs the real verification of the session's arm bundle under qemu; it needs root and
the cached aarch64 rootfs, which ``.ci/run`` prepares when absent (``sudo .venv/bin/python -m
converters verify-emulated arm --prepare-only``). Without them it skips, saying why; with
``CI=true`` it fails instead, so CI never passes without running it.
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
from converters.emulation import compare, prereqs, rootfs, verify
from runtime.contract.formats import get_format
from targets.__main__ import main as targets_main

REPO = Path(__file__).resolve().parents[2]
#: what the runtime's self-check allows an FP32 ONNX artifact on another device
FP32_DEVICE_TOLERANCE = get_format("onnx-fp32").device_tolerance


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
    from types import SimpleNamespace as Typed  # stands in for runtime.contract.manifest.Manifest

    manifest = Typed(artifacts=[Typed(path="model.int8.onnx", engine="onnxruntime"),
                                Typed(path="model.int8.ort", engine="onnxruntime")])
    jobs = verify.plan_jobs(manifest, openvino_check=True)
    assert [(j.artifact, j.engine, j.in_bundle) for j in jobs] == [
        ("model.int8.onnx", "onnxruntime", True), ("model.int8.ort", "onnxruntime", True),
        ("model.int8.onnx", "openvino", False)]
    assert jobs[-1].label == "openvino-model.int8.onnx"
    assert len(verify.plan_jobs(manifest, openvino_check=False)) == 2


def test_both_machines_run_the_users_triage_command():
    assert verify.triage_command("py", "/img", "/b", "m.onnx", "/o") == [
        "py", "-m", "runtime", "triage", "/img", "--bundle", "/b", "--artifact", "m.onnx",
        "--out", "/o", "--device", "cpu", "--quiet"]


def test_the_chroot_gets_runtime_targets_and_what_they_import(tmp_path):
    assert {"runtime", "targets"} <= set(rootfs.kit_packages(REPO))
    for name, body in (("runtime", "def f():\n    from helpers.x import y\n"),
                       ("targets", "import os\n"), ("helpers", "import numpy, deeper.z\n"),
                       ("deeper", ""), ("unused", "import runtime\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(body)
    assert rootfs.kit_packages(tmp_path) == ["deeper", "helpers", "runtime", "targets"]


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


def _triage(bundle: Path, images: Path, out: Path) -> Path:
    cmd = verify.triage_command(sys.executable, str(images), str(bundle), "model.fp32.onnx",
                                str(out))
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO,
                   env=dict(os.environ, PYTHONPATH=str(REPO), CXR_CACHE_DIR=str(out / "cache")))
    return out / "results.csv"


@pytest.fixture(scope="module")
def openvino_bundle(fp32_bundle, tmp_path_factory):
    return verify.engine_check_bundle(fp32_bundle, tmp_path_factory.mktemp("check") / "ov",
                                      "model.fp32.onnx", "openvino")


@pytest.fixture(scope="module")
def x86_results(fp32_bundle, openvino_bundle, sample_dir, tmp_path_factory):
    """``python -m runtime triage`` on 24 real Kermany test images with the bundle (ONNX Runtime)
    and with its engine-check copy (OpenVINO)."""
    out = tmp_path_factory.mktemp("runs")
    return (_triage(fp32_bundle, sample_dir, out / "ort"),
            _triage(openvino_bundle, sample_dir, out / "ov"))


def test_the_engine_check_bundle_is_the_bundle_built_for_openvino(fp32_bundle, openvino_bundle):
    """Only the artifact's engine and the reference answers change: the self-check of the copy
    then compares machines (its reference is OpenVINO here), not OpenVINO with ONNX Runtime."""
    import numpy as np

    from runtime.bundle.selfcheck import verify_all

    before = json.loads((fp32_bundle / "manifest.json").read_text())
    after = json.loads((openvino_bundle / "manifest.json").read_text())
    [old] = [a for a in before["artifacts"] if a["path"] == "model.fp32.onnx"]
    [new] = [a for a in after["artifacts"] if a["path"] == "model.fp32.onnx"]
    assert old["engine"] == "onnxruntime" and "CUDAExecutionProvider" in old["providers"]
    assert (new["engine"], new["device"], new["providers"]) == ("openvino", "CPU", [])
    placement = ("engine", "device", "providers", "provider_options", "precision_hint")
    assert {k: v for k, v in new.items() if k not in placement} == \
        {k: v for k, v in old.items() if k not in placement}
    assert [a for a in after["artifacts"] if a["path"] != "model.fp32.onnx"] == \
        [a for a in before["artifacts"] if a["path"] != "model.fp32.onnx"]
    assert after["reference_set"]["sha256"] != before["reference_set"]["sha256"]
    assert {k: v for k, v in after.items() if k not in ("artifacts", "reference_set", "files")} \
        == {k: v for k, v in before.items() if k not in ("artifacts", "reference_set", "files")}
    with np.load(fp32_bundle / "reference_set.npz") as a, \
            np.load(openvino_bundle / "reference_set.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        ort, ov = a["probabilities/model.fp32.onnx"], b["probabilities/model.fp32.onnx"]
        assert not np.array_equal(ort, ov) and np.abs(ort - ov).max() < 1e-3  # both FP32
        assert all(np.array_equal(a[k], b[k]) for k in a.files
                   if k != "probabilities/model.fp32.onnx")
    checks = {c.artifact: c for c in verify_all(openvino_bundle, device="cpu")}
    assert checks["model.fp32.onnx"].engine == "openvino"
    assert checks["model.fp32.onnx"].passed and checks["model.fp32.onnx"].max_abs_diff < 1e-6


def test_same_model_on_two_engines_agrees(x86_results):
    ort_csv, ov_csv = x86_results
    ort, ov = compare.read_results(ort_csv), compare.read_results(ov_csv)
    assert len(ort) == 24 and {r.status for r in ort.values()} == {"ok"}
    assert {k.split("/")[0] for k in ort} == {"NORMAL", "PNEUMONIA"}
    result = compare.compare_results(ort, ov, artifact="model.fp32.onnx", engine="openvino",
                                     tolerance=FP32_DEVICE_TOLERANCE)
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
    result = compare.compare_results(host, emulated, artifact="m", engine="onnxruntime",
                                     tolerance=0.5)
    assert result.n_images == 23 and result.agreement == pytest.approx(22 / 23)
    assert result.max_abs_diff > 0.9 and not result.passed
    assert len(result.disagreements) == 1 and len(result.errors) == 1
    missing = compare.compare_results(host, dict(list(emulated.items())[:5]), artifact="m",
                                      engine="onnxruntime", tolerance=0.5)
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
    assert loose.resolution == pytest.approx(5e-7)  # triage writes 6 decimals


def test_report_and_manifest_update_keep_the_bundle_loadable(x86_results, fp32_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, bundle)
    before = json.loads((bundle / "manifest.json").read_text())
    ort_csv, ov_csv = x86_results
    rows = compare.read_results(ort_csv)
    results = [compare.compare_results(rows, rows, artifact="model.fp32.onnx",
                                       engine="onnxruntime", tolerance=FP32_DEVICE_TOLERANCE),
               compare.compare_results(rows, compare.read_results(ov_csv),
                                       artifact="model.fp32.onnx", engine="openvino",
                                       tolerance=FP32_DEVICE_TOLERANCE, in_bundle=False)]
    env = {"qemu": "qemu-aarch64 version 7.2.22", "qemu_cpu": "neoverse-n1",
           "emulated": {"machine": "aarch64", "python": "3.11.2", "glibc": "2.36",
                        "debian": "12.12", "onnxruntime": "1.31.1", "openvino": "2026.4.1"},
           "host": verify.host_environment()}
    command = verify._command_line(["verify-emulated", "arm", "--bundle", str(bundle)])
    report = compare.build_report(results, environment=env, images={"n": 24, "source": "x"},
                                  command=command, started="s",
                                  finished="2026-11-23T11:00:00Z", setup={"base": 300.0},
                                  artifacts_sha256={a["path"]: a["sha256"]
                                                    for a in before["artifacts"]},
                                  run_seconds={"openvino-model.fp32.onnx": 61.0})
    assert report["passed"]
    json_path, md_path = compare.write_report(bundle, report)
    text = md_path.read_text()
    assert "PASSED" in text and "| model.fp32.onnx | openvino | check only |" in text
    assert f"regenerate (as root): `python -m converters verify-emulated arm --bundle {bundle}`" \
        in text and "python -m targets" not in text
    assert "openvino-model.fp32.onnx 61 s" in text
    assert f"| {FP32_DEVICE_TOLERANCE:g} | pass |" in text
    assert json.loads(json_path.read_text())["results"][0]["agreement"] == 1.0
    copies = compare.write_report_copy(tmp_path / "reports" / "arm-verification", report)
    assert [p.name for p in copies] == ["arm-verification.json", "arm-verification.md"]
    assert copies[1].read_text() == text

    verified = {a["path"]: a["sha256"] for a in before["artifacts"]}
    from runtime.bundle.load import load_bundle
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

CI_IMAGES = 32  # per artifact and engine: each emulated triage run then takes well under a minute


def _cannot_emulate() -> str | None:
    """Why this machine cannot run the emulated check, or None."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot and mount)"
    if not rootfs.Rootfs().is_ready():
        return (f"the aarch64 rootfs is not prepared at {rootfs.DEFAULT_CACHE} (.ci/run prepares "
                "it: sudo .venv/bin/python -m converters verify-emulated arm --prepare-only)")
    return None


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_arm_bundle_gives_the_same_answers_on_emulated_aarch64(tmp_path, data_dir, request):
    why = _cannot_emulate()
    if why and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, but the emulated-ARM release check cannot run: {why}")
    if why:
        pytest.skip(why)
    bundle = tmp_path / "arm"  # the session's arm bundle, built only when the check can run
    shutil.copytree(request.getfixturevalue("built_bundles")["arm"], bundle)
    code = converters_main(["verify-emulated", "arm", "--bundle", str(bundle),
                            "--images", str(CI_IMAGES),
                            "--images-dir", str(data_dir / "kermany_test_224")])
    report = json.loads((bundle / "verification.json").read_text())
    assert code == 0, report
    assert report["passed"] and report["environment"]["emulated"]["machine"] == "aarch64"
    assert report["environment"]["runner"] == "python -m runtime triage"
    assert report["command"].startswith("python -m converters verify-emulated arm --bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["verification"]["aarch64_emulated"]
    shipped = {a["path"] for a in manifest["artifacts"]}
    assert set(entry["artifacts"]) == shipped
    assert all(a["agreement"] == 1.0 and a["n_images"] == CI_IMAGES
               for a in entry["artifacts"].values())
    checks = entry["engine_checks"]
    assert set(checks) == {f"openvino:{p}" for p in shipped if p.endswith(".onnx")}
    assert all(c["passed"] and c["n_images"] == CI_IMAGES for c in checks.values())
    formats = {a["path"]: a["format"] for a in manifest["artifacts"]}
    assert all(r["tolerance"] == get_format(formats[r["artifact"]]).device_tolerance
               for r in report["results"])
