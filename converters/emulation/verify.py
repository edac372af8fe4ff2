"""``python -m converters verify-emulated arm``: run a bundle on emulated aarch64 and on this host, compare.

Steps: check the host (root, qemu-user-static, binfmt, debootstrap, bundle) -> prepare or reuse the
cached aarch64 rootfs -> copy the bundle, a sample of real test images and the kit's ``runtime`` and
``targets`` packages into it -> for every artifact the manifest lists, run the kit's runtime on
the images on the host and inside the chroot (each in its own process, ``/sys`` mounted only for
OpenVINO) -> compare probabilities and decisions -> write ``verification.json`` and
``verification.md`` into the bundle and a summary into its ``manifest.json``.

The runtime is driven through subprocesses only (``targets`` imports nothing else of the kit):
``python -m runtime triage`` when the runtime has it, else ``triage_fallback.py`` (the same
runtime modules, run as a script).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Sequence

from converters.emulation import compare, prereqs
from runtime.contract import Manifest, load_manifest

#: engines that read the CPU topology from /sys (bind-mounted into the chroot for them)
NEEDS_SYS = frozenset({"openvino"})
#: engines whose answers depend on qemu's CPU model (QEMU_CPU)
SEES_CPU_MODEL = frozenset({"openvino"})
from converters.emulation.rootfs import (DEFAULT_CACHE, DEFAULT_MIRROR, DEFAULT_QEMU_CPU,
                                      DEFAULT_SUITE, KIT, VENV, WORK, Rootfs, RootfsError, log,
                                      qemu_version)

REPO = Path(__file__).resolve().parents[2]
FALLBACK = Path(__file__).with_name("triage_fallback.py")
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
    tolerance: float = compare.DEFAULT_TOLERANCE
    openvino_check: bool = True  # also run OpenVINO on the bundle's ONNX artifacts (not shipped)
    extra_onnx: list[Path] = field(default_factory=list)  # more ONNX files for the OpenVINO check
    update_manifest: bool = True
    prepare_only: bool = False
    rebuild: bool = False
    runner: str = "auto"  # "auto" | "triage" | "fallback"


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

def triage_cli_available(python: str = sys.executable, repo: Path = REPO) -> bool:
    """Whether this checkout's runtime has ``python -m runtime triage``."""
    if not (repo / "runtime" / "__main__.py").is_file():
        return False
    try:
        result = subprocess.run([python, "-m", "runtime", "triage", "--help"], cwd=repo,
                                capture_output=True, text=True, timeout=120,
                                env=dict(os.environ, PYTHONPATH=str(repo)))
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "--artifact" in result.stdout


def runtime_command(python: str, kit: str, folder: str, bundle: str, artifact: str, out: str,
                    *, use_triage: bool, engine: str | None = None) -> list[str]:
    """The command that runs the kit's runtime over ``folder`` (host and chroot alike)."""
    if use_triage and engine is None:
        return [python, "-m", "runtime", "triage", folder, "--bundle", bundle,
                "--artifact", artifact, "--out", out]
    cmd = [python, f"{kit}/converters/emulation/triage_fallback.py", folder, "--bundle", bundle,
           "--artifact", artifact, "--out", out]
    return cmd + (["--engine", engine] if engine else [])


@dataclass(frozen=True)
class Job:
    """One artifact run with one engine on both machines."""

    artifact: str  # manifest path, or an absolute path for an extra ONNX file
    engine: str
    in_bundle: bool
    override_engine: bool  # run with --engine (fallback runner) instead of the manifest's

    @property
    def label(self) -> str:
        return f"{self.engine}-{Path(self.artifact).name}"


def plan_jobs(manifest: Manifest, *, openvino_check: bool, extra_onnx: Sequence[Path] = ()
              ) -> list[Job]:
    jobs = [Job(a.path, a.engine, True, False) for a in manifest.artifacts]
    if openvino_check:  # OpenVINO also reads .onnx files: check it on the shipped ONNX artifacts
        shipped = {(a.path, a.engine) for a in manifest.artifacts}
        for a in manifest.artifacts:
            if Path(a.path).suffix == ".onnx" and (a.path, "openvino") not in shipped:
                jobs.append(Job(a.path, "openvino", False, True))
        for path in extra_onnx:
            jobs.append(Job(str(Path(path).resolve()), "openvino", False, True))
    return jobs


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
    jobs = plan_jobs(manifest, openvino_check=opts.openvino_check, extra_onnx=opts.extra_onnx)
    use_triage = {"auto": None, "triage": True, "fallback": False}[opts.runner]
    if use_triage is None:
        use_triage = triage_cli_available()
    log(f"runner: {'python -m runtime triage' if use_triage else 'triage_fallback.py (runtime modules)'}")

    picked = sample_images(opts.images_dir, opts.images)
    n_images = sum(len(v) for v in picked.values())
    log(f"{n_images} test images from {opts.images_dir} "
        f"({', '.join(f'{k} {len(v)}' for k, v in picked.items())})")

    work_host = opts.cache.expanduser() / "host-runs"
    work_in = rootfs.root / WORK.lstrip("/")
    for path in (work_host, work_in):
        shutil.rmtree(path, ignore_errors=True)
    copy_images(picked, work_in / "images")
    shutil.copytree(bundle, work_in / "bundle",
                    ignore=shutil.ignore_patterns("trt_cache", "__pycache__"))
    extra_dir = work_in / "extra"
    for path in opts.extra_onnx:
        extra_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, extra_dir / Path(path).name)
    rootfs.install_kit(REPO)
    log("copied the bundle, the images and the kit's runtime/ + targets/ into the chroot")

    log("versions inside the chroot (ONNX Runtime without /sys, OpenVINO with /sys)")
    inside = rootfs.versions()
    inside["debian"] = (rootfs.root / "etc" / "debian_version").read_text().strip()
    environment = {"qemu": qemu_version(), "qemu_cpu": opts.qemu_cpu, "emulated": inside,
                   "host": host_environment(),
                   "runner": "python -m runtime triage" if use_triage else "triage_fallback.py"}
    if opts.qemu_cpu in BAD_QEMU_CPUS and any(j.engine in SEES_CPU_MODEL for j in jobs):
        log(f"WARNING: QEMU_CPU={opts.qemu_cpu} makes OpenVINO give wrong answers under qemu "
            "(measured here: decision agreement 0.44); use neoverse-n1 or cortex-a72")
    log(f"inside: python {inside.get('python')}, onnxruntime {inside.get('onnxruntime')}, "
        f"openvino {inside.get('openvino')}, glibc {inside.get('glibc')}; {environment['qemu']}, "
        f"QEMU_CPU={opts.qemu_cpu}")

    results: list[compare.Comparison] = []
    failures: list[str] = []
    for i, job in enumerate(jobs, 1):
        name = Path(job.artifact).name
        chroot_artifact = (f"{WORK}/extra/{name}" if Path(job.artifact).is_absolute()
                           else job.artifact)
        engine = job.engine if job.override_engine else None
        log(f"[{i}/{len(jobs)}] {name} with {job.engine}"
            f"{'' if job.in_bundle else ' (engine check, not shipped)'}: host run")
        host_out = work_host / job.label
        host_cmd = runtime_command(sys.executable, str(REPO), str(work_in / "images"), str(bundle),
                                   job.artifact, str(host_out), use_triage=use_triage,
                                   engine=engine)
        host = subprocess.run(host_cmd, cwd=REPO, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
        if host.returncode != 0:
            failures.append(f"{job.label}: host run failed (exit {host.returncode}): "
                            f"{_tail(host.stderr or host.stdout)}")
            log(failures[-1])
            continue
        log(f"[{i}/{len(jobs)}] {name} with {job.engine}: emulated aarch64 run "
            f"({'with' if job.engine in NEEDS_SYS else 'without'} /sys; minutes under qemu)")
        t0 = time.monotonic()
        chroot_out = f"{WORK}/runs/{job.label}"
        inner = runtime_command(f"{VENV}/bin/python", KIT, f"{WORK}/images", f"{WORK}/bundle",
                                chroot_artifact, chroot_out, use_triage=use_triage, engine=engine)
        try:
            emu = rootfs.run(inner, sys_fs=job.engine in NEEDS_SYS, check=False,
                             timeout=CHROOT_RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            failures.append(f"{job.label}: emulated run took over {CHROOT_RUN_TIMEOUT}s")
            log(failures[-1])
            continue
        if emu.returncode != 0:
            failures.append(f"{job.label}: emulated run failed (exit {emu.returncode}): "
                            f"{_tail(emu.stderr or emu.stdout)}")
            log(failures[-1])
            continue
        comparison = compare.compare_results(
            compare.read_results(host_out / "results.csv"),
            compare.read_results(rootfs.root / chroot_out.lstrip("/") / "results.csv"),
            artifact=name, engine=job.engine, tolerance=opts.tolerance, in_bundle=job.in_bundle)
        results.append(comparison)
        log(f"[{i}/{len(jobs)}] {name} with {job.engine}: {comparison.n_images} images, "
            f"agreement {comparison.agreement:.4f}, max |diff| {comparison.max_abs_diff:.2e} "
            f"-> {'pass' if comparison.passed else 'FAIL'} ({time.monotonic() - t0:.0f}s emulated)")

    report = compare.build_report(
        results, environment=environment, command=_command_line(argv),
        images={"source": str(opts.images_dir), "n": n_images,
                "per_class": {k: len(v) for k, v in picked.items()},
                "files": [f"{k}/{p.name}" for k, v in picked.items() for p in v]},
        started=started_at, finished=_now(), setup=state.get("setup_seconds", {}),
        artifacts_sha256=verified_sha256)
    if failures:
        report["passed"] = False
        report["failures"] = failures
    json_path, md_path = compare.write_report(bundle, report)
    log(f"report: {json_path} and {md_path.name}")
    if opts.update_manifest:
        entry = compare.manifest_entry(report)
        if failures:
            entry["failures"] = failures
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
    return "python -m targets " + " ".join(argv) if argv else "python -m converters verify-emulated arm"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])
