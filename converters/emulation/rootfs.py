"""A cached aarch64 Debian root filesystem that runs the kit's runtime under qemu user emulation.

Prepared once (minutes; later runs reuse it: ``.ci/run`` keeps it in /var/cache/cxr-kit between
CI runs) in stages, each recorded in ``state.json`` beside the root filesystem so an interrupted
preparation resumes where it can and redoes what it cannot:

1. ``foreign``  debootstrap --arch arm64 --foreign (downloads and unpacks the base system, on the host)
2. ``base``     debootstrap --second-stage inside the chroot, run by qemu-aarch64-static
3. ``wheels``   pip download on the host of the aarch64 wheels of the runtime's dependencies, for the
                chroot's own Python and glibc, pinned to the versions the host runs
4. ``venv``     a virtual environment inside the chroot with those wheels installed (offline)

A rootfs whose ``base`` stage is not recorded is half-done debootstrap output: it is wiped and
redone. A change of pins redoes only stages 3-4.

Traps handled here (see docs/ARCHITECTURE.md): OpenVINO's aarch64 wheel needs glibc >= 2.35, so
the release is bookworm (2.36) and the wheel's version is checked after download (pip otherwise
falls back silently to an old release); OpenVINO needs ``/sys`` mounted while ONNX Runtime crashes
when it is, so every chroot call says which mounts it wants; OpenVINO needs ``QEMU_CPU`` set to a
real core (the default ``max`` model gives wrong answers).
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Iterator, Sequence

# Outside any clone and kept between runs (CI prepares it once per machine); root owns it anyway
DEFAULT_CACHE = Path(os.environ.get("CXR_ARM64_ROOTFS", "/var/cache/cxr-kit/arm64-rootfs"))
DEFAULT_SUITE = "bookworm"  # glibc 2.36: OpenVINO's aarch64 wheels need >= 2.35
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_QEMU_CPU = "neoverse-n1"
STAGES = ("foreign", "base", "wheels", "venv")
VENV = "/opt/cxr-venv"
WHEELS = "/opt/cxr-wheels"
KIT = "/opt/cxr-kit"
WORK = "/opt/cxr-verify"
KIT_ROOTS = ("runtime", "targets")  # copied whole, with whatever else of the kit they import
DEBIAN_PACKAGES = ("python3", "python3-venv")

# The runtime's dependencies as distributions; the x86 host's onnxruntime-gpu becomes the plain
# onnxruntime wheel on aarch64 (same version).
RUNTIME_REQUIREMENTS = ("numpy", "onnxruntime", "openvino", "opencv-python-headless", "pydicom",
                        "pillow", "psutil", "tqdm", "onnx", "simplejpeg", "imagecodecs", "tifffile",
                        "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle")
_HOST_ALIASES = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
                 "opencv-python-headless": ("opencv-python-headless", "opencv-python")}
MIN_GLIBC_FOR_OPENVINO = (2, 35)


class RootfsError(RuntimeError):
    """Preparing or using the emulated root filesystem failed."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- pins and wheel tags

def host_pins(requirements: Sequence[str] = RUNTIME_REQUIREMENTS) -> list[str]:
    """``name==version`` for each requirement, at the version this (x86) host runs, so that the
    comparison is about the CPU, not about library versions. Unpinned when the host lacks one."""
    pins = []
    for name in requirements:
        version = None
        for dist in _HOST_ALIASES.get(name, (name,)):
            try:
                version = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
        pins.append(f"{name}=={version}" if version else name)
    return pins


def platform_tags(glibc: tuple[int, int], arch: str = "aarch64") -> list[str]:
    """Every manylinux tag a system with this glibc accepts, newest first (pip's --platform list)."""
    major, minor = glibc
    if major != 2 or minor < 17:
        raise RootfsError(f"glibc {major}.{minor} is too old for manylinux wheels")
    tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, 16, -1)]
    return tags + [f"manylinux2014_{arch}"]


def pip_download_command(dest: Path, pins: Sequence[str], python_version: str,
                         glibc: tuple[int, int], python: str = sys.executable) -> list[str]:
    cmd = [python, "-m", "pip", "download", "--dest", str(dest), "--only-binary=:all:",
           "--implementation", "cp", "--python-version", python_version,
           "--progress-bar", "off"]
    for tag in platform_tags(glibc):
        cmd += ["--platform", tag]
    return cmd + list(pins)


_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-"
                    r"(?P<plat>[^-]+)\.whl$")


def parse_wheel(filename: str) -> dict[str, str]:
    match = _WHEEL.match(filename)
    if not match:
        raise RootfsError(f"not a wheel file name: {filename}")
    info = match.groupdict()
    info["name"] = info["name"].lower().replace("_", "-")
    return info


def check_wheels(filenames: Sequence[str], pins: Sequence[str], arch: str = "aarch64") -> list[str]:
    """Problems with the downloaded set: a pinned package at another version (pip's silent
    fallback), a missing one, or a binary wheel for another architecture."""
    found: dict[str, dict[str, str]] = {}
    problems = []
    for name in filenames:
        info = parse_wheel(name)
        found[info["name"]] = info
        if info["plat"] != "any" and arch not in info["plat"]:
            problems.append(f"{name} is not an {arch} wheel")
    for pin in pins:
        name, _, version = pin.partition("==")
        info = found.get(name.lower())
        if info is None:
            problems.append(f"no wheel for {name} was downloaded")
        elif version and info["version"] != version:
            problems.append(f"{name}: wanted {version}, pip picked {info['version']} "
                            f"({info['plat']}); the chroot's glibc may be too old for it")
    return problems


# --------------------------------------------------------------------------- mounts

def mounts_under(root: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Path]:
    """Mount points at or below ``root``, deepest first."""
    root = root.resolve()
    points = []
    for line in mountinfo.read_text().splitlines():
        parts = line.split()
        if len(parts) > 4:
            point = Path(parts[4].replace("\\040", " "))
            if point == root or root in point.parents:
                points.append(point)
    return sorted(set(points), key=lambda p: len(p.parts), reverse=True)


def unmount_all(root: Path) -> None:
    for point in mounts_under(root):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)
    left = mounts_under(root)
    if left:
        raise RootfsError(f"could not unmount {', '.join(map(str, left))}; unmount them by hand")


def safe_wipe(path: Path) -> None:
    """Delete a rootfs, never through a live mount (a bind-mounted /dev would take the host's)."""
    if not path.exists():
        return
    unmount_all(path)
    shutil.rmtree(path)


@contextlib.contextmanager
def chroot_mounts(root: Path, *, sys_fs: bool) -> Iterator[None]:
    """/proc (always) and /sys (only when asked: ONNX Runtime crashes with it, OpenVINO needs it)."""
    wanted = [("proc", root / "proc", ["-t", "proc", "proc"])]
    if sys_fs:
        wanted.append(("sysfs", root / "sys", ["-t", "sysfs", "sysfs"]))
    done: list[Path] = []
    try:
        for _, point, args in wanted:
            point.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", *args, str(point)], check=True, capture_output=True)
            done.append(point)
        yield
    finally:
        for point in reversed(done):
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _ensure_dev_nodes(root: Path) -> None:
    """Character devices programs expect (created as nodes, not a bind mount of the host's /dev)."""
    dev = root / "dev"
    dev.mkdir(exist_ok=True)
    for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("random", 1, 8),
                               ("urandom", 1, 9), ("tty", 5, 0)):
        node = dev / name
        if not node.exists():
            import stat

            try:
                os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
                os.chmod(node, 0o666)
            except OSError as exc:
                raise RootfsError(f"cannot create {node}: {exc}") from exc


# --------------------------------------------------------------------------- the root filesystem

@dataclass
class Rootfs:
    """The cache folder: ``rootfs/`` (the aarch64 system), ``state.json``, ``lock``."""

    cache: Path = DEFAULT_CACHE
    suite: str = DEFAULT_SUITE
    mirror: str = DEFAULT_MIRROR
    qemu_cpu: str = DEFAULT_QEMU_CPU
    pins: list[str] = field(default_factory=host_pins)

    @property
    def root(self) -> Path:
        return self.cache / "rootfs"

    @property
    def state_path(self) -> Path:
        return self.cache / "state.json"

    # ---- state
    def state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self, state: dict) -> None:
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_path)

    def _mark(self, stage: str, **info) -> None:
        state = self.state()
        state.setdefault("stages", {})[stage] = {"done_at": _now(), **info}
        self._save_state(state)

    def done(self, stage: str) -> bool:
        return stage in self.state().get("stages", {})

    def base_fingerprint(self) -> str:
        return _fingerprint({"suite": self.suite, "arch": "arm64", "packages": DEBIAN_PACKAGES})

    def wheels_fingerprint(self) -> str:
        return _fingerprint({"pins": sorted(self.pins)})

    def why_fresh_base(self, state: dict, force: bool = False) -> str | None:
        """Why the base system must be (re)made from scratch, or None when it can be reused.
        debootstrap cannot resume: a rootfs without a finished second stage is redone."""
        if force:
            return "forced (--rebuild-rootfs)"
        if state.get("base_fingerprint") not in (None, self.base_fingerprint()):
            return "made for another Debian release or package set"
        if "base" not in state.get("stages", {}):
            return "half-done (debootstrap did not finish)"
        if not (self.root / "usr" / "bin" / "python3").exists():
            return "damaged (no /usr/bin/python3)"
        return None

    def is_ready(self) -> bool:
        """True when every stage is done for the current Debian release and pins."""
        state = self.state()
        stages = state.get("stages", {})
        return (all(s in stages for s in STAGES)
                and state.get("base_fingerprint") == self.base_fingerprint()
                and state.get("wheels_fingerprint") == self.wheels_fingerprint()
                and (self.root / VENV.lstrip("/") / "bin" / "python").exists())

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.cache.mkdir(parents=True, exist_ok=True)
        with open(self.cache / "lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"another run holds {self.cache / 'lock'}; waiting for it")
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    # ---- running things inside
    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {"PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "QEMU_CPU": self.qemu_cpu, "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": KIT, "OMP_NUM_THREADS": "1", "DEBIAN_FRONTEND": "noninteractive"}
        env.update(extra or {})
        return env

    def run(self, args: Sequence[str], *, sys_fs: bool = False, check: bool = True,
            capture: bool = True, env: dict[str, str] | None = None,
            timeout: float | None = None, stream_prefix: str | None = None) -> subprocess.CompletedProcess:
        """Run ``args`` inside the chroot (as aarch64, through qemu) with /proc and optional /sys."""
        cmd = ["chroot", str(self.root), *args]
        with chroot_mounts(self.root, sys_fs=sys_fs):
            if stream_prefix is not None:
                return _stream(cmd, self.env(env), stream_prefix, check=check, timeout=timeout)
            result = subprocess.run(cmd, env=self.env(env), capture_output=capture, text=True,
                                    timeout=timeout)
        if check and result.returncode != 0:
            raise RootfsError(f"inside the chroot, {' '.join(args)} failed "
                              f"(exit {result.returncode}):\n{_tail(result.stderr or result.stdout)}")
        return result

    def python(self, code: str, *, sys_fs: bool = False, timeout: float = 600) -> str:
        return self.run([f"{VENV}/bin/python", "-c", code], sys_fs=sys_fs, timeout=timeout).stdout

    # ---- preparation
    def prepare(self, *, force: bool = False) -> dict:
        """Bring the cache to ``ready`` (doing only the stages that are missing); returns state."""
        with self.lock():
            started = time.monotonic()
            why = self.why_fresh_base(self.state(), force)
            if why:
                if self.root.exists():
                    log(f"existing rootfs at {self.root} is {why}: wiping it and starting over")
                safe_wipe(self.root)
                self._save_state({"base_fingerprint": self.base_fingerprint(), "stages": {}})
            if not self.done("foreign"):
                self._stage_foreign()
            if not self.done("base"):
                self._stage_base()
            if self.state().get("wheels_fingerprint") != self.wheels_fingerprint():
                state = self.state()
                state["stages"] = {k: v for k, v in state.get("stages", {}).items()
                                   if k in ("foreign", "base")}
                state["wheels_fingerprint"] = self.wheels_fingerprint()
                self._save_state(state)
            if not self.done("wheels"):
                self._stage_wheels()
            if not self.done("venv"):
                self._stage_venv()
            unmount_all(self.root)
            total = time.monotonic() - started
            if total > 5:
                log(f"rootfs ready in {total / 60:.1f} min at {self.root}")
            state = self.state()
            state.setdefault("setup_seconds", {})
            return state

    def _timed(self, stage: str, started: float, **info) -> None:
        seconds = round(time.monotonic() - started, 1)
        self._mark(stage, seconds=seconds, **info)
        state = self.state()
        state.setdefault("setup_seconds", {})[stage] = seconds
        self._save_state(state)
        log(f"stage {stage} done in {seconds / 60:.1f} min")

    def _stage_foreign(self) -> None:
        log(f"[1/4] debootstrap --foreign: Debian {self.suite} arm64 into {self.root} "
            "(downloads ~60 MB, a few minutes)")
        started = time.monotonic()
        safe_wipe(self.root)
        self.root.mkdir(parents=True)
        _stream(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
                 f"--include={','.join(DEBIAN_PACKAGES)}", self.suite, str(self.root), self.mirror],
                dict(os.environ, LC_ALL="C"), "debootstrap", check=True, only_info=True)
        qemu = shutil.which("qemu-aarch64-static")
        if qemu:  # not needed with binfmt's F flag, but harmless and makes the rootfs portable
            shutil.copy2(qemu, self.root / "usr" / "bin" / "qemu-aarch64-static")
        self._timed("foreign", started)

    def _stage_base(self) -> None:
        log("[2/4] debootstrap --second-stage inside the chroot under qemu (the slow part: "
            "every package's scripts run emulated)")
        started = time.monotonic()
        _ensure_dev_nodes(self.root)
        try:
            _stream(["chroot", str(self.root), "/debootstrap/debootstrap", "--second-stage"],
                    {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root",
                     "QEMU_CPU": self.qemu_cpu, "DEBIAN_FRONTEND": "noninteractive"},
                    "second-stage", check=True, only_info=True)
        finally:
            unmount_all(self.root)
        _ensure_dev_nodes(self.root)
        info = self._probe_base()
        if tuple(info["glibc"]) < MIN_GLIBC_FOR_OPENVINO:
            raise RootfsError(f"Debian {self.suite} has glibc {info['glibc']}: OpenVINO's aarch64 "
                              "wheels need >= 2.35; use --suite bookworm or newer")
        state = self.state()
        state["system"] = info
        self._save_state(state)
        self._timed("base", started, **info)

    def _probe_base(self) -> dict:
        code = ("import json, platform, sys; "
                "print(json.dumps({'python': platform.python_version(), "
                "'machine': platform.machine(), 'glibc': platform.libc_ver()[1]}))")
        out = self.run(["/usr/bin/python3", "-c", code]).stdout
        info = json.loads(out.strip().splitlines()[-1])
        if info["machine"] != "aarch64":
            raise RootfsError(f"the chroot's python reports {info['machine']}, not aarch64")
        info["glibc"] = [int(x) for x in info["glibc"].split(".")[:2]]
        info["debian"] = (self.root / "etc" / "debian_version").read_text().strip()
        return info

    def _stage_wheels(self) -> None:
        system = self.state()["system"]
        pyver = ".".join(system["python"].split(".")[:2])
        glibc = tuple(system["glibc"])
        dest = self.root / WHEELS.lstrip("/")
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        log(f"[3/4] pip download (on the host) of aarch64 wheels for CPython {pyver}, glibc "
            f"{glibc[0]}.{glibc[1]}: {' '.join(self.pins)}")
        started = time.monotonic()
        _stream(pip_download_command(dest, self.pins, pyver, glibc), dict(os.environ),
                "pip", check=True, only_info=False,
                keep=lambda line: line.startswith(("Saved", "Collecting", "ERROR")))
        names = sorted(p.name for p in dest.glob("*.whl"))
        problems = check_wheels(names, self.pins)
        if problems:
            raise RootfsError("the downloaded wheels are not the ones wanted:\n  "
                              + "\n  ".join(problems))
        (dest / "requirements.txt").write_text("\n".join(self.pins) + "\n")
        self._timed("wheels", started, wheels=names)

    def _stage_venv(self) -> None:
        log(f"[4/4] venv {VENV} inside the chroot, installing the wheels offline (a few minutes "
            "under qemu)")
        started = time.monotonic()
        venv = self.root / VENV.lstrip("/")
        shutil.rmtree(venv, ignore_errors=True)
        self.run(["/usr/bin/python3", "-m", "venv", VENV], stream_prefix="venv")
        self.run([f"{VENV}/bin/python", "-m", "pip", "install", "--no-index", "--no-cache-dir",
                  "--disable-pip-version-check", "--progress-bar", "off", "--find-links", WHEELS,
                  "-r", f"{WHEELS}/requirements.txt"], stream_prefix="pip-inside",
                 env={"PIP_CONFIG_FILE": "/dev/null"})
        versions = self.versions()
        missing = [p for p in self.pins if "==" in p
                   and versions.get(p.split("==")[0]) != p.split("==")[1]]
        if missing:
            raise RootfsError(f"inside the chroot the installed versions are {versions}; "
                              f"wanted {missing}")
        self._timed("venv", started, versions=versions)

    def versions(self) -> dict[str, str]:
        """Versions inside the chroot; ONNX Runtime imported without /sys, OpenVINO with it (and
        each in its own process: the two traps need opposite mounts)."""
        base = ("import json, platform, importlib.metadata as m; "
                "d = {'python': platform.python_version(), 'machine': platform.machine(), "
                "'glibc': platform.libc_ver()[1]}; "
                "d.update({n: m.version(n) for n in %r}); " % (list(RUNTIME_REQUIREMENTS),))
        ort = self.python(base + "import onnxruntime as o; "
                                 "d['onnxruntime_providers'] = o.get_available_providers(); "
                                 "print(json.dumps(d))")
        ov = self.python("import json, openvino as ov; c = ov.Core(); "
                         "print(json.dumps({'openvino_build': ov.get_version(), "
                         "'openvino_devices': c.available_devices, "
                         "'openvino_cpu': c.get_property('CPU', 'FULL_DEVICE_NAME')}))",
                         sys_fs=True)
        data = json.loads(ort.strip().splitlines()[-1])
        data.update(json.loads(ov.strip().splitlines()[-1]))
        return data

    def install_kit(self, repo: Path) -> list[str]:
        """Copy the kit's packages the runtime needs (:func:`kit_packages`; fresh, no caches) to
        /opt/cxr-kit inside the chroot; returns their names."""
        kit = self.root / KIT.lstrip("/")
        shutil.rmtree(kit, ignore_errors=True)
        kit.mkdir(parents=True)
        packages = kit_packages(repo)
        for name in packages:
            shutil.copytree(repo / name, kit / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return packages


def kit_packages(repo: Path, roots: Sequence[str] = KIT_ROOTS) -> list[str]:
    """The whole ``roots`` packages plus every other top-level package of the kit that any of
    their modules imports (read from the source, transitively): what ``python -m runtime triage``
    can reach, whichever sub-package a module moves to."""
    local = {init.parent.name for init in repo.glob("*/__init__.py")}
    found: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for source in sorted((repo / name).rglob("*.py")):
            todo += [top for top in imported_top_levels(source) if top in local]
    return sorted(found)


def imported_top_levels(source: Path) -> set[str]:
    """Top-level names of the absolute imports anywhere in ``source`` (functions included)."""
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def qemu_version(qemu: str = "qemu-aarch64-static") -> str:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    return out.splitlines()[0].strip() if out else "unknown"


# --------------------------------------------------------------------------- helpers

def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _fingerprint(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


_PER_PACKAGE = re.compile(r"^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) ")


def _stream(cmd: Sequence[str], env: dict[str, str], prefix: str, *, check: bool,
            timeout: float | None = None, only_info: bool = False, keep=None) -> subprocess.CompletedProcess:
    """Run a long command, echoing its progress lines (debootstrap's ``I:``), keeping the tail."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    lines: list[str] = []
    per_package = 0
    started = time.monotonic()
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        lines.append(line)
        del lines[:-200]
        show = (line.startswith(("I:", "W:", "E:")) if only_info
                else (keep(line) if keep else True))
        if show and _PER_PACKAGE.match(line):
            per_package += 1
            show = per_package % 25 == 0
            if show:
                line = f"{line}  ({per_package} package steps so far)"
        if show and line:
            print(f"  {prefix} +{time.monotonic() - started:5.0f}s  {line}", flush=True)
        if timeout and time.monotonic() - started > timeout:
            proc.kill()
    code = proc.wait()
    output = "\n".join(lines)
    if check and code != 0:
        raise RootfsError(f"{' '.join(cmd[:4])} ... failed (exit {code}):\n{_tail(output)}")
    return subprocess.CompletedProcess(cmd, code, output, "")
