"""What the benchmark ran on: CPU model and flags, cores, GPU, load, library versions, kit commit.

Nothing here imports torch, onnxruntime or openvino: versions come from package metadata, so the
facts can be gathered in the parent process without loading any engine.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from runtime.bundle.versions import installed_versions

REPO = Path(__file__).resolve().parent.parent

#: /proc/cpuinfo flags worth stating for inference speed, grouped the way engineers ask about them
FLAG_GROUPS = {
    "avx2": ("avx2",),
    "fma": ("fma",),
    "avx512": ("avx512f",),
    "vnni": ("avx512_vnni", "avx_vnni"),
    "avx512_bf16": ("avx512_bf16",),
    "avx512_fp16": ("avx512_fp16",),
    "amx": ("amx_tile", "amx_int8", "amx_bf16"),
}
#: packages whose versions change the numbers (metadata only; nothing is imported)
PACKAGES = ("numpy", "onnx", "onnxruntime-gpu", "onnxruntime", "openvino", "torch",
            "opencv-python-headless", "opencv-python", "psutil", "matplotlib", "safetensors")


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def cpu_facts() -> dict:
    """CPU model, the inference-relevant flags, and the cores/threads this process may use."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    import psutil

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    present = {group: sorted(f for f in names if f in flags) for group, names in FLAG_GROUPS.items()}
    return {
        "model": info.get("model name") or info.get("Model") or platform.processor()
        or platform.machine(),
        "architecture": platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cpus": psutil.cpu_count(logical=True),
        "usable_cpus": usable,  # sched affinity: what the benchmark processes may run on
        "flags": {group: bool(names) for group, names in present.items()},
        "flags_found": sorted({f for names in present.values() for f in names}),
        "memory_gib": round(psutil.virtual_memory().total / 2 ** 30, 1),
    }


def gpu_facts() -> list[dict]:
    """GPUs that ``nvidia-smi`` reports (empty when there is no NVIDIA GPU or driver)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages in :data:`PACKAGES`."""
    return installed_versions(PACKAGES)


def onnxruntime_providers() -> list[str]:
    """Providers this onnxruntime build offers (not the same as usable: CUDA may lack libraries)."""
    try:
        import onnxruntime as ort

        return list(ort.get_available_providers())
    except Exception:  # onnxruntime missing or broken: say so in the report, do not fail here
        return []


def kit_revision() -> dict:
    """The kit's git commit and whether the working tree differs from it."""
    git = shutil.which("git")
    if not git:
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run([git, "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        status = subprocess.run([git, "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout
        return {"commit": commit, "dirty": bool(status.strip()) if commit else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (other work on the machine makes timings noisy)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def describe() -> dict:
    """Everything above in one dict (the report's ``machine`` key)."""
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu_facts(),
        "gpus": gpu_facts(),
        "onnxruntime_providers_available": onnxruntime_providers(),
        "versions": versions(),
        "kit": kit_revision(),
    }


def flag_summary(cpu: dict) -> str:
    """``AVX2 yes, AVX-512 yes, VNNI yes (avx512_vnni, avx_vnni)`` for the Markdown report."""
    flags = cpu.get("flags", {})
    found = cpu.get("flags_found", [])
    vnni = [f for f in found if "vnni" in f]
    parts = [f"AVX2 {'yes' if flags.get('avx2') else 'no'}",
             f"AVX-512 {'yes' if flags.get('avx512') else 'no'}",
             f"VNNI {'yes (' + ', '.join(vnni) + ')' if vnni else 'no'}"]
    if flags.get("amx"):
        parts.append("AMX yes")
    return ", ".join(parts)
