"""``python -m converters verify-emulated arm``: run a bundle on emulated aarch64 and on this host, compare.

Steps: check the host (root, qemu-user-static, binfmt, debootstrap, bundle) -> prepare or reuse the
cached aarch64 rootfs -> copy the bundle, a sample of real test images and the kit's packages that
``python -m runtime triage`` imports (``runtime/``, ``targets/``, found by reading their imports)
into it -> for every artifact the manifest lists, run ``python -m runtime triage`` on the images on
the host and inside the chroot (each in its own process, ``/sys`` mounted only for OpenVINO) ->
compare probabilities and decisions -> write ``verification.json`` and ``verification.md`` into
the bundle and a summary into its ``manifest.json``.

OpenVINO also reads ``.onnx`` files: its check runs each shipped ONNX artifact through a copy of
the bundle whose manifest names OpenVINO for it and whose reference set holds OpenVINO's answers on
this host (:func:`engine_check_bundle`), so it too is the real triage (self-check, scope rules,
results file); the bundle itself is not changed.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

from converters.bundle_writer import file_entry, write_reference_set
from converters.emulation import compare, prereqs
from converters.emulation.rootfs import (
    DEFAULT_CACHE,
    DEFAULT_MIRROR,
    DEFAULT_QEMU_CPU,
    DEFAULT_SUITE,
    VENV,
    WORK,
    Rootfs,
    RootfsError,
    log,
    qemu_version,
)
from runtime.bundle.artifacts import open_artifact
from runtime.bundle.selfcheck import load_reference_set
from runtime.contract.formats import FORMATS, get_format
from runtime.contract.manifest import MANIFEST, Manifest, dump_manifest, load_manifest
from runtime.engines.base import predict_proba

#: engines that read the CPU topology from /sys (bind-mounted into the chroot for them)
NEEDS_SYS = frozenset({"openvino"})
#: engines whose answers depend on qemu's CPU model (QEMU_CPU)
SEES_CPU_MODEL = frozenset({"openvino"})
REPO = Path(__file__).resolve().parents[2]
COMMAND = "python -m converters verify-emulated"
RUNNER = "python -m runtime triage"
EMULATED_ARCH = {"arm": "aarch64"}  # targets that have an emulated verification
CHROOT_RUN_TIMEOUT = 1800
BAD_QEMU_CPUS = ("max", "")  # qemu's default model: OpenVINO's ARM kernels go wrong on it


def default_images_dir() -> Path:
    data = os.environ.get("CXR_DATA_DIR")
    base = Path(data) if data else REPO.parent / "shared" / "data"
    return base / "kermany_test_224"


@dataclass
class Options:
    target: str = "arm"
    bundle: Path = Path("dist/arm")
    images: int = 64
    images_dir: Path = field(default_factory=default_images_dir)
    cache: Path = DEFAULT_CACHE
    suite: str = DEFAULT_SUITE
    mirror: str = DEFAULT_MIRROR
    qemu_cpu: str = DEFAULT_QEMU_CPU
    tolerance: float | None = None  # None: each artifact format's device_tolerance
    openvino_check: bool = True  # also run OpenVINO on the bundle's ONNX artifacts (not shipped)
    update_manifest: bool = True
    report: Path | None = None  # also write the report as REPORT.json and REPORT.md
    prepare_only: bool = False
    rebuild: bool = False


# --------------------------------------------------------------------------- images

def sample_images(source: Path, n: int) -> dict[str, list[Path]]:
    """``n`` images spread evenly over each class folder's sorted files (both classes, ~n/2 each):
    deterministic, so reruns compare the same images."""
    classes = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise RootfsError(f"{source} has no class folders (expected NORMAL/ and PNEUMONIA/)")
    picked: dict[str, list[Path]] = {}
    for i, folder in enumerate(classes):
        want = n // len(classes) + (1 if i < n % len(classes) else 0)
        files = sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".dcm"))
        if want and files:
            step = len(files) / min(want, len(files))
            picked[folder.name] = [files[int(k * step)] for k in range(min(want, len(files)))]
    return picked


def copy_images(picked: dict[str, list[Path]], dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    for cls, files in picked.items():
        (dest / cls).mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copy2(file, dest / cls / file.name)


# --------------------------------------------------------------------------- running the runtime

def triage_command(python: str, folder: str, bundle: str, artifact: str, out: str) -> list[str]:
    """``python -m runtime triage``, as a user runs it, on the host and in the chroot alike."""
    return [python, "-m", "runtime", "triage", folder, "--bundle", bundle, "--artifact", artifact,
            "--out", out, "--device", "cpu", "--quiet"]


@dataclass(frozen=True)
class Job:
    """One artifact run with one engine on both machines."""

    artifact: str  # its path in the manifest
    engine: str
    in_bundle: bool  # False: an engine check through a copy of the bundle, not what ships

    @property
    def label(self) -> str:
        return f"{self.engine}-{self.artifact}"


def plan_jobs(manifest: Manifest, *, openvino_check: bool) -> list[Job]:
    jobs = [Job(a.path, a.engine, True) for a in manifest.artifacts]
    if openvino_check:  # OpenVINO also reads .onnx files: check it on the shipped ONNX artifacts
        shipped = {(a.path, a.engine) for a in manifest.artifacts}
        jobs += [Job(a.path, "openvino", False) for a in manifest.artifacts
                 if Path(a.path).suffix == ".onnx" and (a.path, "openvino") not in shipped]
    return jobs


def engine_check_bundle(bundle: Path, dest: Path, artifact: str, engine: str) -> Path:
    """A copy of ``bundle`` at ``dest`` as a build for ``engine`` would write it: its manifest runs
    ``artifact`` with ``engine`` (placed as the format table places that engine's formats on the
    bundle's target) and its reference set holds that engine's answers on this host, so the
    runtime's self-check compares the two machines, not two engines. Returns ``dest``."""
    shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns("trt_cache", "__pycache__"))
    manifest = load_manifest(dest)
    entry = manifest.artifact(artifact)
    placement = next(r for r in FORMATS.values() if r.engine == engine).placement(manifest.target)
    entry.engine = engine
    entry.providers = list(placement.providers)
    entry.provider_options = {k: dict(v) for k, v in placement.provider_options.items()}
    entry.device, entry.precision_hint = placement.device, placement.precision_hint
    runner, _notes = open_artifact(dest, entry, device="cpu")
    ref = load_reference_set(dest, manifest)
    with np.load(dest / manifest.reference_set.path, allow_pickle=False) as data:
        indices = data["indices"]
    written = write_reference_set(dest / manifest.reference_set.path, ref.inputs, indices,
                                  {**ref.probabilities, artifact: predict_proba(runner, ref.inputs)})
    record = file_entry(written, dest)
    manifest.reference_set.sha256, manifest.reference_set.bytes = record.sha256, record.bytes
    manifest.files = [record if f.path == record.path else f for f in manifest.files]
    dump_manifest(manifest, dest / MANIFEST)
    return dest


def host_environment() -> dict:
    def version(*names: str) -> str | None:
        for name in names:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return None

    libc = platform.libc_ver()
    return {"machine": platform.machine(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}, {libc[0]} {libc[1]}",
            "onnxruntime": version("onnxruntime", "onnxruntime-gpu"),
            "openvino": version("openvino")}


# --------------------------------------------------------------------------- the command

def verify(opts: Options, argv: Sequence[str] = ()) -> int:
    """Run the whole verification; returns the process exit code (0 passed, 1 failed)."""
    if opts.target not in EMULATED_ARCH:
        raise prereqs.HostCheckError([prereqs.Problem(
            f"target {opts.target!r} has no emulated verification (only "
            f"{', '.join(EMULATED_ARCH)}): it runs on this kind of host already",
            "run its bundle directly: python -m runtime triage FOLDER --bundle dist/"
            f"{opts.target}")])
    started_at = _now()
    bundle = opts.bundle.resolve()
    if opts.prepare_only:
        problems = prereqs.check_tools()
        problems += [] if problems else prereqs.ensure_binfmt()
        if problems:
            raise prereqs.HostCheckError(problems)
    else:
        prereqs.check_host(bundle, opts.images_dir)
    rootfs = Rootfs(cache=opts.cache.expanduser(), suite=opts.suite, mirror=opts.mirror,
                    qemu_cpu=opts.qemu_cpu)
    log(f"aarch64 rootfs cache: {rootfs.cache} ({'ready' if rootfs.is_ready() else 'to prepare'})")
    state = rootfs.prepare(force=opts.rebuild)
    if opts.prepare_only:
        log("rootfs prepared; --prepare-only: not running a verification")
        return 0

    with rootfs.lock():
        return _verify_in(rootfs, state, opts, bundle, started_at, argv)


def _verify_in(rootfs: Rootfs, state: dict, opts: Options, bundle: Path, started_at: str,
               argv: Sequence[str]) -> int:
    manifest = load_manifest(bundle)
    verified_sha256 = {a.path: a.sha256 for a in manifest.artifacts}
    jobs = plan_jobs(manifest, openvino_check=opts.openvino_check)
    picked = sample_images(opts.images_dir, opts.images)
    n_images = sum(len(v) for v in picked.values())
    log(f"{n_images} test images from {opts.images_dir} "
        f"({', '.join(f'{k} {len(v)}' for k, v in picked.items())})")
    runs = _Runs(rootfs, bundle, opts.cache.expanduser() / "host-runs")
    runs.stage(picked, jobs)

    log("versions inside the chroot (ONNX Runtime without /sys, OpenVINO with /sys)")
    inside = rootfs.versions()
    inside["debian"] = (rootfs.root / "etc" / "debian_version").read_text().strip()
    environment = {"qemu": qemu_version(), "qemu_cpu": opts.qemu_cpu, "emulated": inside,
                   "host": host_environment(), "runner": RUNNER}
    if opts.qemu_cpu in BAD_QEMU_CPUS and any(j.engine in SEES_CPU_MODEL for j in jobs):
        log(f"WARNING: QEMU_CPU={opts.qemu_cpu} makes OpenVINO give wrong answers under qemu "
            "(measured here: decision agreement 0.44); use neoverse-n1 or cortex-a72")
    log(f"inside: python {inside.get('python')}, onnxruntime {inside.get('onnxruntime')}, "
        f"openvino {inside.get('openvino')}, glibc {inside.get('glibc')}; {environment['qemu']}, "
        f"QEMU_CPU={opts.qemu_cpu}")

    results: list[compare.Comparison] = []
    failures: list[str] = []
    seconds: dict[str, float] = {}
    for i, job in enumerate(jobs, 1):
        t0 = time.monotonic()
        tolerance = opts.tolerance if opts.tolerance is not None else \
            get_format(manifest.artifact(job.artifact).format).device_tolerance
        outcome = runs.compare(job, f"[{i}/{len(jobs)}]", tolerance)
        seconds[job.label] = round(time.monotonic() - t0, 1)
        if isinstance(outcome, str):
            failures.append(outcome)
            log(outcome)
            continue
        results.append(outcome)
        log(f"[{i}/{len(jobs)}] {job.artifact} with {job.engine}: {outcome.n_images} images, "
            f"agreement {outcome.agreement:.4f}, max |diff| {outcome.max_abs_diff:.2e} "
            f"-> {'pass' if outcome.passed else 'FAIL'} ({seconds[job.label]:.0f}s, both machines)")

    report = compare.build_report(
        results, environment=environment, command=_command_line(argv),
        images={"source": str(opts.images_dir), "n": n_images,
                "per_class": {k: len(v) for k, v in picked.items()},
                "files": [f"{k}/{p.name}" for k, v in picked.items() for p in v]},
        started=started_at, finished=_now(), setup=state.get("setup_seconds", {}),
        artifacts_sha256=verified_sha256, run_seconds=seconds)
    if failures:
        report["passed"] = False
        report["failures"] = failures
    return _record(report, opts, bundle, verified_sha256, results)


class _Runs:
    """The same images and bundles on both machines: the chroot's work folder holds the images,
    a copy of the bundle and the engine-check bundles; the host reads them from there too (the
    shipped artifacts from the bundle itself)."""

    def __init__(self, rootfs: Rootfs, bundle: Path, work_host: Path):
        self.rootfs, self.bundle, self.work_host = rootfs, bundle, work_host
        self.work_in = rootfs.root / WORK.lstrip("/")

    def stage(self, picked: dict[str, list[Path]], jobs: Sequence[Job]) -> None:
        for path in (self.work_host, self.work_in):
            shutil.rmtree(path, ignore_errors=True)
        copy_images(picked, self.work_in / "images")
        shutil.copytree(self.bundle, self.work_in / "bundle",
                        ignore=shutil.ignore_patterns("trt_cache", "__pycache__"))
        for job in jobs:
            if not job.in_bundle:
                engine_check_bundle(self.bundle, self.work_in / "checks" / job.label,
                                    job.artifact, job.engine)
        packages = self.rootfs.install_kit(REPO)
        log(f"copied the bundle, the images and the kit's {', '.join(packages)} into the chroot")

    def _bundle_in(self, job: Job) -> str:
        return f"{WORK}/bundle" if job.in_bundle else f"{WORK}/checks/{job.label}"

    def compare(self, job: Job, step: str, tolerance: float) -> compare.Comparison | str:
        """Run ``job`` on the host, then in the chroot; the comparison, or what went wrong."""
        what = f"{job.artifact} with {job.engine}"
        log(f"{step} {what}{'' if job.in_bundle else ' (engine check, not shipped)'}: host run")
        host_out = self.work_host / job.label
        host_bundle = self.bundle if job.in_bundle else \
            self.rootfs.root / self._bundle_in(job).lstrip("/")
        host = subprocess.run(
            triage_command(sys.executable, str(self.work_in / "images"), str(host_bundle),
                           job.artifact, str(host_out)),
            cwd=REPO, capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=str(REPO), CXR_CACHE_DIR=str(self.work_host / "cache")))
        if host.returncode != 0:
            return (f"{job.label}: host run failed (exit {host.returncode}): "
                    f"{_tail(host.stderr or host.stdout)}")
        log(f"{step} {what}: emulated aarch64 run "
            f"({'with' if job.engine in NEEDS_SYS else 'without'} /sys; minutes under qemu)")
        chroot_out = f"{WORK}/runs/{job.label}"
        inner = triage_command(f"{VENV}/bin/python", f"{WORK}/images", self._bundle_in(job),
                               job.artifact, chroot_out)
        try:
            emu = self.rootfs.run(inner, sys_fs=job.engine in NEEDS_SYS, check=False,
                                  timeout=CHROOT_RUN_TIMEOUT,
                                  env={"CXR_CACHE_DIR": f"{WORK}/cache"})
        except subprocess.TimeoutExpired:
            return f"{job.label}: emulated run took over {CHROOT_RUN_TIMEOUT}s"
        if emu.returncode != 0:
            return (f"{job.label}: emulated run failed (exit {emu.returncode}): "
                    f"{_tail(emu.stderr or emu.stdout)}")
        return compare.compare_results(
            compare.read_results(host_out / "results.csv"),
            compare.read_results(self.rootfs.root / chroot_out.lstrip("/") / "results.csv"),
            artifact=job.artifact, engine=job.engine, tolerance=tolerance,
            in_bundle=job.in_bundle)


def _record(report: dict, opts: Options, bundle: Path, verified_sha256: dict[str, str],
            results: Sequence[compare.Comparison]) -> int:
    """Write the report (into the bundle, and to ``opts.report`` when given), record it in the
    manifest, say the verdict; returns the exit code."""
    json_path, md_path = compare.write_report(bundle, report)
    log(f"report: {json_path} and {md_path.name}")
    if opts.report is not None:
        copies = compare.write_report_copy(opts.report, report)
        log(f"report: {' and '.join(map(str, copies))}")
    if opts.update_manifest:
        entry = compare.manifest_entry(report)
        if report.get("failures"):
            entry["failures"] = report["failures"]
        try:
            compare.update_manifest(bundle, entry, reports=(json_path, md_path),
                                    expect_sha256=verified_sha256)
        except compare.CompareError as exc:
            log(f"error: {exc}")
            return 1
        log(f"manifest: {bundle / 'manifest.json'} -> verification.aarch64_emulated")
    checks_failed = [f"{c.engine}:{c.artifact}" for c in results if not c.in_bundle and not c.passed]
    if report["passed"]:
        log("VERIFIED: the bundle's artifacts give the same answers on emulated aarch64")
    else:
        log(f"NOT VERIFIED: see {md_path}")
    if checks_failed:
        log(f"engine checks (not shipped artifacts) that FAILED: {', '.join(checks_failed)}"
            + (f"; QEMU_CPU={opts.qemu_cpu} is known to break OpenVINO, use neoverse-n1"
               if opts.qemu_cpu in BAD_QEMU_CPUS else ""))
    return 0 if report["passed"] else 1


def _command_line(argv: Sequence[str]) -> str:
    """The command that regenerates the report, as run."""
    return "python -m converters " + shlex.join(argv) if argv else f"{COMMAND} arm"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])
