"""What the host needs before it can emulate an aarch64 system, and how to fix what is missing.

Every check returns plain-words problems (with the command that fixes each) instead of failing on
the first one, so a user fixes everything in one go.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

APT_PACKAGES = ("qemu-user-static", "binfmt-support", "debootstrap")
APT_FIX = "sudo apt-get update && sudo apt-get install -y " + " ".join(APT_PACKAGES)
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_FIX = ("sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; "
              "sudo update-binfmts --enable qemu-aarch64")


@dataclass(frozen=True)
class Problem:
    """One thing the host lacks: what, and the command (or action) that fixes it."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"- {self.what}\n    fix: {self.fix}"


class HostCheckError(RuntimeError):
    """The host cannot run the emulated verification; the message lists every problem and fix."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__(format_problems(self.problems))


def format_problems(problems: list[Problem]) -> str:
    """Each problem on its own line; problems with the same fix share one ``fix:`` line."""
    lines = ["this host cannot run the emulated aarch64 verification yet:"]
    fixes: dict[str, list[str]] = {}
    for problem in problems:
        fixes.setdefault(problem.fix, []).append(problem.what)
    for fix, whats in fixes.items():
        lines += [f"- {what}" for what in whats]
        lines.append(f"    fix: {fix}")
    return "\n".join(lines)


def check_tools(which: Callable[[str], str | None] = shutil.which,
                euid: int | None = None, machine: str | None = None) -> list[Problem]:
    """Root, an x86-like host, qemu-aarch64-static, debootstrap and chroot."""
    problems: list[Problem] = []
    euid = os.geteuid() if euid is None else euid
    machine = platform.machine() if machine is None else machine
    if machine in ("aarch64", "arm64"):
        problems.append(Problem(
            "this host is already aarch64: no emulation is needed",
            "run the bundle natively: python -m runtime triage FOLDER --bundle dist/arm"))
    if euid != 0:
        problems.append(Problem(
            "not running as root: debootstrap, chroot and mount need root",
            "sudo -E env PATH=\"$PATH\" python -m converters verify-emulated arm ..."))
    missing = [pkg for tool, pkg in (("qemu-aarch64-static", "qemu-user-static"),
                                     ("debootstrap", "debootstrap"))
               if which(tool) is None]
    for pkg in missing:
        tool = "qemu-aarch64-static" if pkg == "qemu-user-static" else pkg
        problems.append(Problem(f"{tool} not found (Debian/Ubuntu package {pkg})", APT_FIX))
    if which("update-binfmts") is None:
        problems.append(Problem("update-binfmts not found (package binfmt-support)", APT_FIX))
    for tool in ("chroot", "mount", "umount"):
        if which(tool) is None:
            problems.append(Problem(f"{tool} not found", "sudo apt-get install -y coreutils mount"))
    return problems


def binfmt_registered(binfmt_dir: Path = BINFMT_DIR) -> bool:
    """True when the kernel runs aarch64 ELF files through qemu (binfmt_misc entry enabled)."""
    entry = binfmt_dir / "qemu-aarch64"
    try:
        return entry.is_file() and entry.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


def ensure_binfmt(binfmt_dir: Path = BINFMT_DIR, run=subprocess.run) -> list[Problem]:
    """Register qemu-aarch64 with binfmt_misc when it is not (as root; containers may refuse)."""
    if binfmt_registered(binfmt_dir):
        return []
    if os.geteuid() == 0:
        if not (binfmt_dir / "register").exists():
            run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt_dir)],
                capture_output=True, check=False)
        run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True, check=False)
        if binfmt_registered(binfmt_dir):
            return []
    return [Problem("the kernel does not run aarch64 programs through qemu "
                    f"(no enabled {binfmt_dir / 'qemu-aarch64'}); in a container the host "
                    "must allow binfmt_misc (privileged)", BINFMT_FIX)]


def check_bundle(bundle: Path) -> list[Problem]:
    """The bundle folder exists, has a valid manifest, and every artifact it lists is there."""
    from runtime.contract.manifest import ContractError, load_manifest

    build = "python -m converters build --target arm --out dist"
    if not bundle.is_dir():
        return [Problem(f"no bundle at {bundle}", f"build it: {build}, or pass --bundle")]
    try:
        manifest = load_manifest(bundle)
    except ContractError as exc:
        return [Problem(str(exc), f"rebuild it: {build}")]
    return [Problem(f"artifact {art.path!r} listed in the manifest is missing from {bundle}",
                    f"rebuild it: {build}")
            for art in manifest.artifacts if not (bundle / art.path).is_file()]


def check_images(images: Path) -> list[Problem]:
    if not images.is_dir():
        return [Problem(f"no test images at {images}",
                        "set CXR_DATA_DIR to the shared data folder or pass --images-dir")]
    return []


def check_host(bundle: Path, images: Path, *, fix_binfmt: bool = True) -> None:
    """Raise :class:`HostCheckError` listing everything the host lacks (tools, root, bundle)."""
    problems = check_tools()
    if not problems and fix_binfmt:
        problems += ensure_binfmt()
    problems += check_bundle(bundle)
    problems += check_images(images)
    if problems:
        raise HostCheckError(problems)
