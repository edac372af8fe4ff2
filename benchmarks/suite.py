"""The benchmark run: which bundles, which measurements, in which order; ratios and verdicts.

For every bundle (``dist/<target>`` for each ``--target`` of the tiny model, ``dist/clinical/
<target>`` of the clinical one, see :data:`MODEL_FOLDERS`, plus every ``--bundle``), one section:

1. the PyTorch FP32 baseline from the checkpoint the bundle was built from (found by the
   manifest's ``provenance.checkpoint_sha256``), in a fresh process; quality for both on the test
   split of the model's own dataset (``provenance.dataset``);
2. every artifact of the manifest, each in a fresh process with the engine and providers the
   manifest names (:mod:`benchmarks.worker`); a failing or crashing artifact becomes a row with
   ``status: "failed"`` and its error;
3. end-to-end triage throughput per artifact over the full-size JPEGs, and the decode-only rate
   (:mod:`benchmarks.e2e`);
4. ratios against the baseline of the same run, quality deltas, a one-line verdict per row.

A target whose hardware is not this machine's (``arm`` on an x86 host) is not timed: its rows
carry ``status: "not-timed"``, the quality measured on this host with the same files, and the
emulated verification recorded in the bundle, if any.
"""

from __future__ import annotations

import math
import os
import platform
import re
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from benchmarks import e2e, machine, openvino_app
from benchmarks.e2e import default_workers
from benchmarks.measure import Settings, quality_delta
from benchmarks.worker import REPO, findings_job, run_worker
from runtime.bundle.hashing import sha256_file
from runtime.contract.manifest import ArtifactEntry, Manifest, to_dict

#: targets that must run on another CPU architecture to be timed; the value names the host
#: machine types that may time them
NATIVE_ARCH = {"arm": ("aarch64", "arm64")}
BASELINE = "pytorch-fp32"

#: Published figures for the UdaciMed ResNet-18 pneumonia model (64x64), quoted for comparison
#: with the resnet18_small bundles: NOT measured by this kit.
PUBLISHED_UDACIMED = {
    "source": "UdaciMed (published figures; not measured by this kit, hardware not the same)",
    "model": "ResNet-18, 64x64 input",
    "engine": "ONNX Runtime",
    "latency_b1_ms": 3.74,
    "throughput_b1_images_per_second": 268.0,
    "throughput_b64_images_per_second": 4010.0,
    "fp16_model_mb": 21.3,
}
PUBLISHED_FOR_ARCHITECTURES = ("resnet18_small",)
#: where each reference model's bundles live under the dist folder (``converters build --model
#: M --out dist/<folder>``): ``dist/<target>`` for tiny, ``dist/clinical/<target>`` for clinical
MODEL_FOLDERS = {"tiny": "", "clinical": "clinical"}


@dataclass
class Options:
    targets: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=lambda: ["tiny"])  # keys of MODEL_FOLDERS
    bundles: list[Path] = field(default_factory=list)
    dist: Path = Path("dist")
    settings: Settings = field(default_factory=Settings)
    quick: bool = False
    data: str | None = None  # pneumoniamnist.npz or its folder (None: the runtime's lookup)
    images: Path | None = None  # full-size X-rays for end to end (None: no end to end)
    e2e: bool = True
    e2e_limit: int | None = None  # images for end to end (None: all)
    workers: int = field(default_factory=default_workers)
    checkpoints: list[Path] = field(default_factory=list)
    timeout: float = 900.0
    command: str = ""


@dataclass(frozen=True)
class BundleRef:
    path: Path
    label: str


# --------------------------------------------------------------------------------------------
# planning


def model_bundle(dist: Path, model: str, target: str) -> Path:
    """Where ``converters build --model MODEL`` puts a target's bundle under ``dist``."""
    return dist / MODEL_FOLDERS[model] / target


def resolve_bundles(options: Options) -> list[BundleRef]:
    """Per target, each model's bundle side by side (``dist/cpu``, ``dist/clinical/cpu``, ...),
    then each ``--bundle`` (duplicates dropped), labelled (``cpu``, ``clinical-cpu``)."""
    paths: list[Path] = [model_bundle(options.dist, m, t) for t in options.targets
                         for m in options.models] + list(options.bundles)
    seen: set[Path] = set()
    refs: list[BundleRef] = []
    labels: set[str] = set()
    for path in paths:
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        label = _label(path, options)
        base, n = label, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.add(label)
        refs.append(BundleRef(path, label))
    return refs


def _label(path: Path, options: Options) -> str:
    """``cpu`` for dist/cpu; ``<parent>-<name>`` for any other bundle folder (file-name safe)."""
    if path.parent.resolve() == options.dist.resolve():
        raw = path.name
    else:
        raw = f"{path.parent.name}-{path.name}" if path.parent.name else path.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("._") or "bundle"


def _display(path: Path) -> str:
    """A path inside the repository relative to it (reports are committed), else as given."""
    try:
        return Path(path).resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


class CheckpointFinder:
    """Finds the checkpoint a bundle was built from by its sha256 (explicit ones first)."""

    def __init__(self, explicit: list[Path]):
        self.explicit = [Path(p) for p in explicit]
        self._hashes: dict[Path, str] = {}

    def candidates(self) -> list[Path]:
        found = list(self.explicit)
        models = REPO / "models"
        if models.is_dir():
            found += sorted(models.rglob("*.safetensors"))
        return found

    def sha(self, path: Path) -> str | None:
        if path not in self._hashes:
            try:
                self._hashes[path] = sha256_file(path)
            except OSError:
                return None
        return self._hashes[path]

    def find(self, manifest: Manifest) -> tuple[Path | None, str]:
        """(checkpoint, how it was found) or (None, why not)."""
        wanted = manifest.provenance.checkpoint_sha256
        name = manifest.provenance.checkpoint
        if not wanted:
            if self.explicit:
                return self.explicit[0], "given with --checkpoint (the manifest records no sha256)"
            return None, "the manifest records no checkpoint_sha256; pass --checkpoint PATH"
        for path in self.candidates():
            if path.is_file() and self.sha(path) == wanted:
                return path, f"sha256 matches the bundle's provenance ({wanted[:12]}…)"
        return None, (f"the checkpoint this bundle was built from ({name}, sha256 {wanted[:12]}…) "
                      f"was not found among --checkpoint and models/**/*.safetensors; pass "
                      f"--checkpoint PATH, or rebuild the bundle from the current checkpoint")


# --------------------------------------------------------------------------------------------
# running


Say = Callable[[str], None]


def _files(root: Path, entry: ArtifactEntry) -> list[dict]:
    """Every file of an artifact with its size on disk now (None when missing)."""
    out = []
    for part in entry.all_files():
        name = part.path
        file = root / name
        out.append({"path": name, "bytes": file.stat().st_size if file.is_file() else None})
    return out


def _size(files: list[dict]) -> int | None:
    sizes = [f["bytes"] for f in files]
    return None if not sizes or any(s is None for s in sizes) else int(sum(sizes))


def _empty_row(name: str, kind: str) -> dict:
    return {"name": name, "kind": kind, "status": "ok", "error": None, "format": None,
            "precision": None, "engine": None, "files": [], "size_bytes": None,
            "is_default": False, "best": False, "import_ms": None, "load_ms": None,
            "execution": None, "latency_ms": None, "throughput": None, "memory": None,
            "quality": None, "quality_delta": None, "manifest_metrics": None,
            "vs_pytorch": None, "e2e": None, "benchmark_app": None, "build": None,
            "verdict": "", "worker": None}


def _merge(row: dict, result: dict, timed: bool) -> None:
    """Copy a worker's result into a row; a row not timed here keeps no timing or memory."""
    keys = ("import_ms", "load_ms", "execution", "latency_ms", "memory", "quality", "worker")
    for key in keys if timed else ("execution", "quality", "worker"):
        if result.get(key) is not None:
            row[key] = json_copy(result[key])
    if timed and result.get("throughput"):
        row["throughput"] = {str(t["batch"]): dict(t) for t in result["throughput"]}
    if row.get("worker") is not None:
        row["worker"]["load_average_start"] = result.get("load_average_start")
    if row.get("memory") and (result.get("worker") or {}).get("peak_rss_sampled_mib"):
        row["memory"]["peak_rss_sampled_mib"] = result["worker"]["peak_rss_sampled_mib"]
    if result.get("status") != "ok":
        row["status"] = "failed"
        row["error"] = result.get("error") or "unknown failure"
        if result.get("traceback"):
            row["traceback"] = result["traceback"]
    elif not timed:
        row["status"] = "not-timed"


def json_copy(value):
    """A deep copy of JSON-like data (results are shared between sections through the cache)."""
    import json

    return json.loads(json.dumps(value, default=str))


def _timed_here(target: str) -> tuple[bool, str | None]:
    archs = NATIVE_ARCH.get(target)
    host = platform.machine().lower()
    if archs and host not in archs:
        return False, f"not timed: {host} host (the {target} target runs on {'/'.join(archs)})"
    return True, None


def benchmark_bundle(ref: BundleRef, options: Options, finder: CheckpointFinder,
                     cache: dict, say: Say) -> dict:
    """One report section: baseline + every artifact (+ end to end), with ratios and verdicts."""
    from runtime.bundle.artifacts import read_manifest
    from runtime.errors import BundleError

    section: dict = {"label": ref.label, "path": str(ref.path), "status": "ok", "error": None,
                     "target": None, "dataset": None, "model": None, "threshold": None, "default_artifact": None,
                     "timed": True, "notes": [], "checkpoint": None, "decode_only": None,
                     "published_reference": None, "rows": [], "summary": None, "charts": {}}
    try:
        manifest = read_manifest(ref.path)
    except BundleError as exc:
        missing = not ref.path.is_dir()
        section.update(status="missing" if missing else "failed", error=str(exc))
        say(f"{ref.label}: {'no bundle' if missing else 'unreadable bundle'}: {exc}")
        return section
    target = manifest.target
    provenance = manifest.provenance
    config, problem = _model_config(provenance, ref.path)
    if problem:
        section.update(status="failed", error=problem)
        say(f"{ref.label}: {problem}")
        return section
    if provenance.dataset is None and config is None:
        section.update(status="failed", error=(
            f"bundle {ref.path} records no provenance.dataset (built before the kit recorded "
            f"the model's training data), so its test images are unknown: rebuild it with "
            f"`python -m converters build --target {target}` (--model clinical for a clinical "
            f"bundle)"))
        say(f"{ref.label}: {section['error']}")
        return section
    pre = manifest.preprocessing.as_dict()
    dataset = provenance.dataset or "config"
    section.update(target=target, threshold=manifest.threshold, dataset=dataset,
                   model_config=None if config is None else _display(Path(config)),
                   test_data=None if config is None else _test_data_name(Path(config)),
                   build_seconds=manifest.build.seconds,
                   default_artifact=manifest.default_artifact,
                   model={"name": manifest.model.name, "architecture": provenance.architecture,
                          "config": provenance.config, "input": to_dict(manifest.model.input),
                          "size": pre["size"]})
    timed, why_not = _timed_here(target)
    section["timed"] = timed
    if why_not:
        section["notes"].append(why_not + ". Quality is measured on this host with the same files.")
    emulated = manifest.verification.get("aarch64_emulated")
    if target in NATIVE_ARCH:
        section["emulated_verification"] = emulated
        section["notes"].append(_emulation_note(emulated))
    if provenance.architecture in PUBLISHED_FOR_ARCHITECTURES:
        section["published_reference"] = _published(section)
    section["gate_max_sensitivity_drop"] = manifest.gate.max_sensitivity_drop

    # 1. every artifact, each in a fresh process
    for entry in manifest.artifacts:  # the format table's rows, as this bundle ships them
        name = entry.path
        row = _empty_row(name, "artifact")
        row.update(format=entry.format, precision=entry.precision, engine=entry.engine,
                   is_default=name == manifest.default_artifact,
                   gate=entry.gate.status, manifest_metrics=to_dict(entry.metrics.test))
        row["files"] = _files(ref.path, entry)
        row["size_bytes"] = _size(row["files"])
        row["build"] = _build_facts(entry)
        if emulated and target in NATIVE_ARCH:
            row["emulated_verification"] = (emulated.get("artifacts") or {}).get(name)
        say(f"{ref.label}: {name}: measuring in a fresh process"
            + ("" if timed else " (quality only: not timed on this host)"))
        result = run_worker({"kind": "artifact", "bundle": str(ref.path), "artifact": name,
                             "timing": timed, "settings": options.settings.as_dict(),
                             "data": options.data, "dataset": dataset, "config": config,
                             "device": "auto"}, timeout=options.timeout)
        _merge(row, result, timed)
        say(f"{ref.label}: {name}: {_brief(row)}")
        if timed and row["engine"] == "openvino" and row["status"] == "ok":
            row["benchmark_app"] = _benchmark_app(ref.path / name, row, options, say, ref.label)
        section["rows"].append(row)

    fallback = [r for r in section["rows"] if (r.get("execution") or {}).get("cpu_fallback")]
    if fallback:
        said = next((n for r in fallback for n in r["execution"].get("notes") or []), "")
        section["notes"].append(
            "GPU target measured on this machine's CPU: the GPU providers the manifest asks for "
            "are not usable here, so every number in this section is the CPU fallback "
            "(CPUExecutionProvider), not a GPU figure."
            + (f" The runtime said: {said}" if said else ""))

    # 2. the PyTorch FP32 baseline, on CUDA only where the artifacts really ran on CUDA
    baseline = _empty_row(BASELINE, "baseline")
    baseline.update(format="pytorch", precision="fp32", engine="pytorch")
    if config is not None:
        checkpoint = Path(config)
        how = "the model config the bundle was built from (sha256 matches)"
    else:
        checkpoint, how = finder.find(manifest)
    section["checkpoint"] = {"path": _display(checkpoint) if checkpoint else None, "found": how}
    if checkpoint is None:
        baseline.update(status="failed", error=how)
        say(f"{ref.label}: PyTorch FP32 baseline: FAILED: {how}")
    else:
        weights = checkpoint if config is None else _config_network_file(checkpoint)
        baseline["files"] = [{"path": _display(weights), "bytes": weights.stat().st_size}]
        baseline["size_bytes"] = weights.stat().st_size
        device = "cuda" if any((r.get("execution") or {}).get("device") == "cuda"
                               for r in section["rows"]) else "cpu"
        thresholds = manifest.thresholds()
        findings = {**findings_job(manifest.model),
                    "thresholds": [thresholds[n] for n in manifest.model.finding_labels]}
        key = ("baseline", finder.sha(checkpoint), device, repr(findings),
               str(options.data), repr(options.settings))
        if key in cache and (cache[key].get("latency_ms") or not timed):
            result = cache[key]
            baseline_note = "same measurement as an earlier section (same checkpoint and device)"
            say(f"{ref.label}: PyTorch FP32 baseline: reused from an earlier section")
        else:
            say(f"{ref.label}: PyTorch FP32 baseline ({checkpoint.name}, {device}): measuring "
                f"in a fresh process")
            reference = {"config": config} if config else {"checkpoint": str(checkpoint)}
            result = run_worker({"kind": "pytorch", **reference,
                                 "threshold": section["threshold"], "findings": findings,
                                 "device": device,
                                 "preprocessing": pre, "timing": timed,
                                 "settings": options.settings.as_dict(), "data": options.data,
                                 "dataset": dataset},
                                timeout=options.timeout)
            cache[key] = result
            baseline_note = None
        _merge(baseline, result, timed)
        if baseline_note and baseline.get("execution"):
            baseline["execution"] = {**baseline["execution"],
                                     "notes": [*baseline["execution"]["notes"], baseline_note]}
        say(f"{ref.label}: PyTorch FP32 baseline: {_brief(baseline)}")
    baseline["manifest_metrics"] = to_dict(manifest.reference.metrics.test)
    section["rows"].insert(0, baseline)

    # 3. end to end
    if timed:
        _end_to_end(section, ref, options, cache, say)

    # 4. ratios, deltas, verdicts
    _compare(section, baseline)
    return section


def _model_config(provenance, bundle: Path) -> tuple[str | None, str | None]:
    """(the model config a ``--config`` bundle was built from, None) when it is still there
    unchanged: its ``[data] test`` and network are the benchmark's test images and FP32
    reference; (None, why not) when it is gone or changed; (None, None) for a kit checkpoint's
    bundle."""
    if not provenance.model_config:
        return None, None
    path = Path(provenance.model_config)
    if not path.is_file() or sha256_file(path) != provenance.model_config_sha256:
        return None, (f"bundle {bundle} was built from the model config {path}, which is missing "
                      "or has changed since (sha256 differs): benchmark it where its config, "
                      "data and network are, or rebuild it with `python -m converters build "
                      "--config`")
    return str(path), None


def _config_network_file(config: Path) -> Path:
    """The file holding a model config's network: its ``[network] weights``, or the TorchScript,
    exported or ONNX file (the config itself for a builder without weights)."""
    network = tomllib.loads(config.read_text(encoding="utf-8")).get("network", {})
    for key in ("weights", "torchscript", "exported", "onnx"):
        if isinstance(network.get(key), str):
            path = Path(os.path.expandvars(network[key])).expanduser()
            path = path if path.is_absolute() else config.parent / path
            if path.is_file():
                return path
    return config


def _test_data_name(config: Path) -> str | None:
    """A short name for a model config's ``[data] test``: its file or folder (``kermany_test_224``,
    ``pneumoniamnist.npz (test)``); None when the config gives none."""
    test = tomllib.loads(config.read_text(encoding="utf-8")).get("data", {}).get("test")
    if isinstance(test, dict):
        where = test.get("npz") or test.get("csv") or ""
        split = f" ({test['split']})" if test.get("split") else ""
        return f"{Path(where).name}{split}" if where else None
    return Path(test).name if isinstance(test, str) else None


def _build_facts(entry: ArtifactEntry) -> dict:
    """What the build recorded for an artifact (its manifest entry): the escalation level that
    passed, parity with PyTorch FP32 on validation, and the gate's drops on ``split`` (the
    validation split; "test" in bundles from before the gate moved there)."""
    attempts = entry.build.attempts
    gate = entry.gate
    return {"level": attempts[-1].level if attempts else None, "attempts": len(attempts),
            "parity_max_abs_diff": entry.parity.max_abs_diff, "gate": gate.status,
            "drops": {"sensitivity": gate.sensitivity_drop, "auc": gate.auc_drop,
                      "specificity": gate.specificity_drop},
            "split": gate.split,
            "limits": {"sensitivity": gate.max_sensitivity_drop, "auc": gate.max_auc_drop,
                       "specificity": gate.max_specificity_drop,
                       "agreement": gate.min_agreement},
            "seconds": entry.build.seconds}


def _benchmark_app(xml: Path, row: dict, options: Options, say: Say, label: str) -> dict:
    """OpenVINO's benchmark_app on the same IR with the kit's throughput settings, and the ratio
    of the kit's batch-64 images/s to it (:mod:`benchmarks.openvino_app`)."""
    timing = ((row.get("execution") or {}).get("timing") or {}).get("throughput") or {}
    say(f"{label}: {row['name']}: OpenVINO benchmark_app, batch {openvino_app.BATCH}, "
        f"{openvino_app.HINT} hint")
    app = openvino_app.run_benchmark_app(xml, options.settings.min_seconds,
                                         precision=timing.get("precision"),
                                         threads=options.settings.threads,
                                         device=timing.get("device") or "CPU",
                                         timeout=options.timeout)
    kit = _tp(row, openvino_app.BATCH)
    app.update(kit_images_per_second=kit, ratio=openvino_app.ratio(kit, app),
               target_ratio=openvino_app.TARGET_RATIO)
    say(f"{label}: {row['name']}: benchmark_app "
        + (f"{_rate(app['images_per_second'])} img/s, kit / benchmark_app "
           f"{app['ratio']:.2f}" if app["ratio"] is not None else
           f"FAILED: {app['error']}" if app["status"] != "ok" else "no kit figure at batch 64"))
    return app


def _emulation_note(emulated: dict | None) -> str:
    if not emulated:
        return ("No emulated verification is recorded in this bundle (run `python -m converters "
                "verify-emulated arm` to check that aarch64 gives the same answers).")
    verdict = "passed" if emulated.get("passed") else "FAILED"
    return (f"Emulated aarch64 verification {verdict} ({emulated.get('date')}, qemu "
            f"{emulated.get('qemu_cpu') or ''}, {emulated.get('n_images')} images): same-answers "
            "check only; emulated timings mean nothing and are not reported.")


def _published(section: dict) -> dict:
    pub = dict(PUBLISHED_UDACIMED)
    config = (section.get("model") or {}).get("config") or {}
    width = config.get("width")
    if width is not None and width != 64:
        pub["caveat"] = (f"This checkpoint's resnet18_small has width {width} (ResNet-18 has 64): "
                         "a smaller network than the published one; compare speed-ups, not "
                         "absolute times")
    else:
        pub["caveat"] = "Different hardware: compare speed-ups against our own baseline"
    return pub


def _end_to_end(section: dict, ref: BundleRef, options: Options, cache: dict, say: Say) -> None:
    ok_rows = [r for r in section["rows"] if r["kind"] == "artifact"]
    if not options.e2e:
        for row in ok_rows:
            row["e2e"] = {"status": "skipped", "error": "end to end not asked for (--no-e2e)"}
        return
    folder = options.images
    if folder is None or not Path(folder).is_dir():
        why = (f"image folder not found: {folder}" if folder else "no image folder") + \
            " (pass --images DIR of full-size X-rays)"
        say(f"{ref.label}: end to end skipped: {why}")
        section["notes"].append(f"End to end not measured: {why}.")
        for row in ok_rows:
            row["e2e"] = {"status": "skipped", "error": why}
        return
    sample_key = ("sample", str(folder), options.e2e_limit)
    if sample_key not in cache:
        tmp = Path(tempfile.mkdtemp(prefix="cxr-bench-images-"))
        cache[sample_key] = e2e.sample_folder(Path(folder), options.e2e_limit, tmp / "images")
    sample, count = cache[sample_key]
    manifest_pre = _manifest_preprocessing(ref.path)
    decode_key = ("decode", str(sample), repr(sorted(manifest_pre.items())), options.workers)
    if decode_key not in cache:
        say(f"{ref.label}: decode-only rate over {count} images ({options.workers} threads)")
        cache[decode_key] = e2e.decode_only(sample, manifest_pre, options.workers, options.timeout)
    decode = dict(cache[decode_key])
    decode["folder"] = str(folder)
    section["decode_only"] = decode
    say(f"{ref.label}: decode-only: {_rate(decode.get('images_per_second'))} images/s"
        f" (model input {manifest_pre.get('size')} px)")
    for row in ok_rows:
        if row["status"] == "failed":
            row["e2e"] = {"status": "skipped", "error": "the artifact failed to load or run"}
            continue
        say(f"{ref.label}: {row['name']}: end-to-end triage over {count} images")
        result = e2e.triage_rate(sample, ref.path, row["name"], options.workers, count,
                                 options.timeout)
        rate, ceiling = result.get("images_per_second"), decode.get("images_per_second")
        result["vs_decode_only"] = rate / ceiling if rate and ceiling else None
        result["folder"] = str(folder)
        row["e2e"] = result
        say(f"{ref.label}: {row['name']}: end to end "
            + (f"{_rate(rate)} images/s" if result["status"] == "ok"
               else f"FAILED: {result['error']}"))


def _manifest_preprocessing(path: Path) -> dict:
    from runtime.bundle.artifacts import read_manifest

    return read_manifest(path).preprocessing.as_dict()


def _rate(value) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _brief(row: dict) -> str:
    if row["status"] == "failed":
        return f"FAILED: {row['error']}"
    parts = []
    if row.get("latency_ms"):
        parts.append(f"p50 {row['latency_ms']['p50']:.3f} ms")
    if row.get("throughput"):
        top = row["throughput"][max(row["throughput"], key=int)]
        parts.append(f"b{top['batch']} {_rate(top['images_per_second'])} img/s")
    if row.get("quality"):
        parts.append(f"sensitivity {row['quality']['sensitivity']:.4f}")
    if row["status"] == "not-timed":
        parts.append("not timed")
    return ", ".join(parts) or row["status"]


# --------------------------------------------------------------------------------------------
# comparison


def _ratio(numerator, denominator) -> float | None:
    if numerator is None or denominator is None or not denominator:
        return None
    value = numerator / denominator
    return value if math.isfinite(value) else None


def _tp(row: dict, batch: int) -> float | None:
    return ((row.get("throughput") or {}).get(str(batch)) or {}).get("images_per_second")


def _compare(section: dict, baseline: dict) -> None:
    base_ok = baseline["status"] != "failed"
    gate = section["gate_max_sensitivity_drop"]
    for row in section["rows"]:
        reference = baseline.get("quality") if base_ok else None
        row["quality_delta"] = quality_delta(row.get("quality"), reference)
        if row["quality_delta"] is not None:
            row["quality_delta"]["reference"] = f"{BASELINE} (this run)"
        if row is baseline or not base_ok or row["status"] != "ok":
            continue
        bl, rl = baseline.get("latency_ms") or {}, row.get("latency_ms") or {}
        row["vs_pytorch"] = {
            "latency_p50_speedup": _ratio(bl.get("p50"), rl.get("p50")),
            "latency_p99_speedup": _ratio(bl.get("p99"), rl.get("p99")),
            "throughput_ratio": {str(b): _ratio(_tp(row, b), _tp(baseline, b))
                                 for b in _batches(row)},
            "peak_rss_ratio": _ratio((row.get("memory") or {}).get("peak_rss_mib"),
                                     (baseline.get("memory") or {}).get("peak_rss_mib")),
            "size_ratio": _ratio(row.get("size_bytes"), baseline.get("size_bytes")),
        }
    eligible = [r for r in section["rows"] if r["kind"] == "artifact" and r["status"] == "ok"
                and _tp(r, 64) is not None and _sens_drop(r) <= gate + 1e-9]
    best = max(eligible, key=lambda r: _tp(r, 64)) if eligible else None
    if best is not None:
        best["best"] = True
    for row in section["rows"]:
        row["verdict"] = verdict(row, section, base_ok)
    section["summary"] = _summary(section, baseline, best)


def _batches(row: dict) -> list[int]:
    return sorted(int(b) for b in (row.get("throughput") or {}))


def _sens_drop(row: dict) -> float:
    """The largest sensitivity drop against the baseline over the row's findings."""
    delta = row.get("quality_delta") or {}
    drops = [-d["sensitivity"] for d in [delta, *(delta.get("findings") or {}).values()]
             if d and d.get("sensitivity") is not None]
    return max(drops, default=0.0)


def _speed_words(ratio: float | None, where: str) -> str | None:
    if ratio is None:
        return None
    if 0.9 <= ratio <= 1.1:
        return f"about as fast as PyTorch FP32 {where}"
    if ratio > 1:
        return f"{ratio:.1f}× faster {where}"
    return f"{1 / ratio:.1f}× slower {where}"


def _pp(delta: float) -> str:
    return f"{100 * delta:+.1f} pp"


def verdict(row: dict, section: dict, base_ok: bool) -> str:
    """One line a buyer can read: speed against PyTorch FP32, sensitivity change, caveats."""
    if row["status"] == "failed":
        first = (row.get("error") or "unknown failure").strip().splitlines()[0]
        return f"FAILED: {first[:200]}"
    gate = section["gate_max_sensitivity_drop"]
    quality = _quality_words(row, gate)
    if row["kind"] == "baseline":
        if row["status"] == "not-timed":
            return "baseline for quality only (not timed on this host)"
        return "baseline: PyTorch FP32 measured in this run; every ratio is against this row"
    if row["status"] == "not-timed":
        check = row.get("emulated_verification")
        emu = ("same answers under emulated aarch64" if check and check.get("passed") else
               "emulated aarch64 check FAILED" if check else "no emulated aarch64 check recorded")
        return f"not timed: {platform.machine()} host; {emu}; {quality} (measured on this host)"
    parts = []
    vs = row.get("vs_pytorch") or {}
    if not base_ok:
        parts.append("no PyTorch baseline in this run, no speed ratio")
    else:
        words = [w for w in (_speed_words(vs.get("latency_p50_speedup"), "at batch 1 (p50)"),
                             _speed_words((vs.get("throughput_ratio") or {}).get("64"),
                                          "at batch 64")) if w]
        parts.append(", ".join(words) if words else "speed not measured")
    parts.append(quality)
    if row.get("best"):
        parts.append("best of this bundle")
    if row.get("is_default"):
        parts.append("bundle default")
    if (row.get("execution") or {}).get("cpu_fallback"):
        parts.append("CPU fallback: not a GPU figure")
    return "; ".join(parts)


def _quality_words(row: dict, gate: float) -> str:
    """Sensitivity (and specificity) change against the baseline; a model with several findings:
    each finding's, named."""
    delta = row.get("quality_delta")
    findings = (row.get("quality") or {}).get("findings")
    if findings:
        if not delta or row["kind"] == "baseline":
            return ", ".join(f"{name} sensitivity {q['sensitivity']:.3f}"
                             for name, q in findings.items())
        each = delta.get("findings") or {}
        return " / ".join(f"{name} {_delta_words(each[name], gate)}" for name in findings
                         if each.get(name)) or "quality change not measured"
    if not delta or row["kind"] == "baseline":
        q = row.get("quality")
        return f"sensitivity {q['sensitivity']:.3f}" if q else "quality not measured"
    return _delta_words(delta, gate)


def _delta_words(delta: dict, gate: float) -> str:
    sens, spec = delta.get("sensitivity", 0.0), delta.get("specificity", 0.0)
    words = "sensitivity unchanged" if abs(sens) < 5e-4 else f"sensitivity {_pp(sens)}"
    if -sens > gate + 1e-9:
        words += f" (beyond the {100 * gate:.1f} pp gate)"
    if abs(spec) >= 5e-4:
        words += f", specificity {_pp(spec)}"
    return words


def _summary(section: dict, baseline: dict, best: dict | None) -> dict:
    rows = section["rows"]
    out = {"rows": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
           "failed": sum(r["status"] == "failed" for r in rows),
           "not_timed": sum(r["status"] == "not-timed" for r in rows),
           "e2e_failed": sum((r.get("e2e") or {}).get("status") == "failed" for r in rows),
           "benchmark_app_failed": _app_failed(rows),
           "benchmark_app_ratios": {r["name"]: r["benchmark_app"]["ratio"] for r in rows
                                    if r.get("benchmark_app")},
           "best_artifact": best["name"] if best else None}
    if best is not None:
        vs = best.get("vs_pytorch") or {}
        out.update(best_latency_p50_speedup=vs.get("latency_p50_speedup"),
                   best_throughput_b64_ratio=(vs.get("throughput_ratio") or {}).get("64"),
                   best_e2e_images_per_second=(best.get("e2e") or {}).get("images_per_second"))
    out["decode_only_images_per_second"] = (section.get("decode_only") or {}).get(
        "images_per_second")
    return out


# --------------------------------------------------------------------------------------------
# the whole run


def run(options: Options, say: Say) -> dict:
    """Measure every bundle; return the report (see benchmarks/README.md for its keys)."""
    import datetime as dt

    started = time.perf_counter()
    began = dt.datetime.now(dt.timezone.utc)
    load_start = machine.load_average()
    say("collecting machine facts")
    facts = machine.describe()
    refs = resolve_bundles(options)
    finder = CheckpointFinder(options.checkpoints)
    cache: dict = {}
    sections = [benchmark_bundle(ref, options, finder, cache, say) for ref in refs]
    for key, value in list(cache.items()):  # remove the temporary symlink folders
        if isinstance(key, tuple) and key[0] == "sample" and value[0] != Path(key[1]):
            import shutil

            shutil.rmtree(Path(value[0]).parent, ignore_errors=True)
    facts["load_average_start"] = load_start
    facts["load_average_end"] = machine.load_average()
    return {
        "schema_version": 1,
        "kind": "cxr-kit-benchmark-report",
        "docs": "benchmarks/README.md",
        "created_at": began.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - started, 1),
        "command": options.command,
        "settings": {**options.settings.as_dict(), "quick": options.quick,
                     "data": options.data, "e2e": options.e2e,
                     "e2e_images_folder": str(options.images) if options.images else None,
                     "e2e_limit": options.e2e_limit, "e2e_workers": options.workers,
                     "e2e_batch": e2e.TRIAGE_BATCH, "timeout_s": options.timeout},
        "machine": facts,
        "bundles": sections,
        "summary": _overall(sections),
    }


def _overall(sections: list[dict]) -> dict:
    rows = [r for s in sections for r in s["rows"]]
    return {"bundles": len(sections),
            "bundles_missing_or_failed": sum(s["status"] != "ok" for s in sections),
            "rows": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
            "failed": sum(r["status"] == "failed" for r in rows),
            "not_timed": sum(r["status"] == "not-timed" for r in rows),
            "e2e_failed": sum((r.get("e2e") or {}).get("status") == "failed" for r in rows),
            "benchmark_app_failed": _app_failed(rows)}


def _app_failed(rows: list[dict]) -> int:
    return sum((r.get("benchmark_app") or {}).get("status") == "failed" for r in rows)


def succeeded(report: dict) -> bool:
    s = report["summary"]
    return not (s["bundles_missing_or_failed"] or s["failed"] or s["e2e_failed"]
                or s.get("benchmark_app_failed")) and s["rows"] > 0
