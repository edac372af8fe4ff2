"""One measurement in one fresh process: ``python -m benchmarks.worker`` reads a job (JSON) on stdin.

A fresh interpreter per artifact means one engine's threads, caches and memory never pollute the
next one's numbers, and a crash (a segfault in a native library, an out-of-memory kill) costs one
row, not the run. The worker writes everything that libraries print to stderr and sends back one
line on stdout: ``@@cxr-bench-result@@ {json}``. The parent (:func:`run_worker`) samples the
child's RSS with psutil while it runs, and turns a crash, a timeout or a missing result line into
a result with ``status: "failed"`` and the reason.

Jobs:

- ``{"kind": "artifact", "bundle", "artifact", "timing", "settings", "data", "dataset",
  "device"}``: open the artifact with :func:`runtime.bundle.load.load_bundle` (sha256 verified, the
  manifest's engine and providers), measure load time, memory and quality on the test split of
  ``dataset`` (the manifest's ``provenance.dataset``); then latency and throughput with each
  engine driven the way it is fastest (:mod:`benchmarks.runners`);
- ``{"kind": "pytorch", "checkpoint" | "config", "threshold", "device", "settings", "data",
  "dataset"}``: the same for the FP32 reference, on its own test images: a kit checkpoint on its
  dataset, or a model config's network on its ``[data] test`` (PyTorch; ONNX Runtime's CPU
  provider for an ONNX network); torch is imported here only. An artifact job of a config bundle
  carries ``config`` too;
- ``{"kind": "decode", "folder", "preprocessing", "workers", "oversample", "limit"}``: the
  runtime's decode + crop + resize over an image folder with its thread pool, no model: the
  practical ceiling for end-to-end triage;
- ``{"kind": "plain", "folder", "preprocessing", "workers", "oversample"}``: the plain loop a
  programmer writes, the ceiling the runtime's loop is compared with: read each JPEG, decode it
  with libjpeg's DCT scaling to >= oversample x the model input, gray, the manifest's crop, OpenCV
  area resize, with the same threads and files; no checks, no scope, no model.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

MARKER = "@@cxr-bench-result@@"
REPO = Path(__file__).resolve().parent.parent
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


# --------------------------------------------------------------------------------------------
# inside the worker process


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2 ** 20


def _peak_rss_mib() -> float:
    """The kernel's high-water mark of this process's RSS (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024.0


def _test_split(data: str | None, dataset: str, spec, name: str, config: str | None,
                findings: dict) -> tuple[Any, Any]:
    """The model's own test images, preprocessed with ``spec``, and which of them carry each
    finding ((N, findings) bool, :meth:`converters.findings.Findings.targets`): the test split
    of ``dataset`` (what the model was trained on), through the build's one dispatch
    (:func:`converters.data.sets.evaluation_sets`), or a model config's ``[data] test``.
    ``findings``: ``{"classes", "names", "task"}`` of the bundle's model."""
    import numpy as np

    from converters.findings import findings_of

    if config is not None:
        from converters.config.for_build import config_evaluation_sets
        from converters.config.model import load_config

        test = config_evaluation_sets(load_config(config), spec).test
    else:
        from converters.data.sets import evaluation_sets

        test = evaluation_sets(name, dataset, spec, data).test
    names = findings["names"]
    classes = test.classes if set(names) <= set(test.classes) else findings["classes"]
    model = findings_of(classes, names, findings["task"])
    positives = np.stack([model.targets(test.labels, k) for k in range(len(model))], axis=1)
    return test.inputs, positives


def _timings(runners, inputs, settings, result: dict) -> None:
    """Latency and throughput with the runners of :mod:`benchmarks.runners`; records how each
    engine was driven (``execution.timing``) and the peak memory with the timing engines."""
    from benchmarks.measure import latency, throughput

    result["latency_ms"] = latency(runners.latency.run, inputs, settings)
    result["throughput"] = [throughput(runners.throughput.run, inputs, batch, settings,
                                       runners.throughput.drain)
                            for batch in settings.batch_sizes]
    result["execution"]["timing"] = runners.facts()
    result["memory"]["peak_rss_with_timing_mib"] = _peak_rss_mib()


def _threads_of(engine) -> int | str:
    """Threads the engine computes with: a number, or "default" when the engine chose."""
    try:
        return engine.threads
    except Exception:  # informative only
        return "default"


def measure_artifact(job: dict, result: dict) -> None:
    from benchmarks.measure import Settings, batched_probabilities, finding_quality

    settings = Settings.from_dict(job["settings"])
    rss_start = _rss_mib()
    t0 = time.perf_counter()
    import runtime.bundle.load as rb  # noqa: F401  (the engine libraries are imported on load)

    result["import_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    bundle = rb.load_bundle(job["bundle"], job["artifact"], device=job.get("device", "auto"),
                            threads=settings.threads)
    result["load_ms"] = (time.perf_counter() - t0) * 1e3  # sha256 check + engine creation
    described = bundle.describe()
    wanted = list(bundle.artifact.providers)
    active = list(described["active"])
    result["execution"] = {
        "engine": described["engine"], "requested": described["requested"], "active": active,
        "manifest_providers": wanted, "device": described["device"],
        "inference_precision": str(described["inference_precision"]),
        "fell_back": bool(described["fell_back"]),
        "cpu_fallback": any(p in GPU_PROVIDERS for p in wanted)
        and not any(p in GPU_PROVIDERS for p in active),
        "threads": _threads_of(bundle.engine), "notes": list(bundle.notes)}
    result["memory"] = {"rss_start_mib": rss_start, "rss_after_load_mib": _rss_mib()}
    model = bundle.manifest.model
    inputs, positives = _test_split(job.get("data"), job["dataset"], bundle.preprocessing,
                                    model.name, job.get("config"), findings_job(model))
    result["quality"] = finding_quality(positives, batched_probabilities(bundle.predict, inputs),
                                        bundle.thresholds, model.finding_indices)
    result["memory"]["peak_rss_mib"] = _peak_rss_mib()  # the runtime's engine, batches of 64
    if job.get("timing", True):
        from benchmarks.runners import engine_runners

        _timings(engine_runners(bundle.engine, settings, inputs), inputs, settings, result)


def findings_job(model) -> dict:
    """A bundle model's findings as a job carries them (``runtime.contract.manifest.ModelInfo``):
    its classes (the output columns), the findings in order, and the task."""
    return {"classes": list(model.classes), "names": model.finding_labels, "task": model.task}


def measure_pytorch(job: dict, result: dict) -> None:
    """The FP32 reference of a bundle: its kit checkpoint (``checkpoint``), or the network its
    model config describes (``config``: PyTorch, or ONNX Runtime's CPU provider for an ONNX
    network, as the build used it), on the same test images."""
    from benchmarks.measure import Settings

    settings = Settings.from_dict(job["settings"])
    rss_start = _rss_mib()
    t0 = time.perf_counter()
    import torch  # the baseline is the only place torch is imported

    result["import_ms"] = (time.perf_counter() - t0) * 1e3
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = job.get("device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        result.setdefault("notes", []).append("CUDA asked for but torch cannot use it: on the CPU")
        device = "cpu"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as work:
        model, spec, engine = _reference_model(job, Path(work))
        if engine == "onnxruntime":
            device = "cpu"  # the ONNX reference runs where the build ran it
        model = model.eval().to(device)
        result["load_ms"] = (time.perf_counter() - t0) * 1e3
        _measure_reference(job, result, model, spec, engine, device, settings, rss_start)


def _reference_model(job: dict, work: Path):
    """(probabilities-out module, ModelSpec, engine name) of the job's checkpoint or config."""
    from converters.architectures import to_probabilities

    if job.get("config"):
        from converters.config.for_build import build_inputs
        from converters.config.model import load_config
        from converters.config.onnx_source import OnnxClassifier

        loaded, _sets = build_inputs(load_config(job["config"]), work)
        engine = "onnxruntime" if isinstance(loaded.model, OnnxClassifier) else "pytorch"
        return to_probabilities(loaded.model), loaded.spec, engine
    from converters.checkpoint import load_checkpoint

    loaded = load_checkpoint(job["checkpoint"])
    return to_probabilities(loaded.model), loaded.spec, "pytorch"


def _measure_reference(job: dict, result: dict, model, spec, engine: str, device: str,
                       settings, rss_start: float) -> None:
    import torch

    from benchmarks.measure import batched_probabilities, finding_quality

    result["execution"] = {
        "engine": engine, "requested": [device], "active": [device], "manifest_providers": [],
        "device": device, "inference_precision": "fp32", "fell_back": False,
        "cpu_fallback": job.get("device") == "cuda" and device == "cpu",
        "threads": torch.get_num_threads(), "notes": list(result.pop("notes", [])),
        "torch": torch.__version__}
    bundle_spec = job.get("preprocessing")
    if bundle_spec and bundle_spec != spec.preprocessing.as_dict():
        result["execution"]["notes"].append(
            "the checkpoint's preprocessing differs from the bundle's; the checkpoint's is used")
    if job.get("dataset") and not job.get("config") and job["dataset"] != spec.dataset:
        result["execution"]["notes"].append(
            f"the checkpoint declares dataset {spec.dataset!r}, the bundle "
            f"{job['dataset']!r}; the checkpoint's test split is used")
    result["memory"] = {"rss_start_mib": rss_start, "rss_after_load_mib": _rss_mib()}

    def run(batch):
        with torch.inference_mode():
            return model(torch.from_numpy(batch).to(device)).cpu().numpy()

    findings = job.get("findings") or {"classes": list(spec.classes),
                                       "names": [spec.classes[spec.positive_index]],
                                       "thresholds": [float(job["threshold"])],
                                       "task": "multiclass"}
    inputs, positives = _test_split(job.get("data"), spec.dataset, spec.preprocessing, spec.name,
                                    job.get("config"), findings)
    columns = [list(findings["classes"]).index(name) for name in findings["names"]]
    result["quality"] = finding_quality(
        positives, batched_probabilities(run, inputs),
        dict(zip(findings["names"], map(float, findings["thresholds"]))), columns)
    result["memory"]["peak_rss_mib"] = _peak_rss_mib()
    if job.get("timing", True):
        from benchmarks.runners import sync_runners

        _timings(sync_runners(run, threads=torch.get_num_threads()), inputs, settings, result)


def measure_decode(job: dict, result: dict) -> None:
    """Decode + crop + resize every image under the folder exactly as triage does, no model."""
    from concurrent.futures import ThreadPoolExecutor

    from runtime.contract.manifest import Preprocessing
    from runtime.running.triage import load_one, reduce_to_for, walk

    spec = Preprocessing.from_dict(job["preprocessing"])
    oversample = job.get("oversample")
    reduce_to = reduce_to_for(spec, oversample)
    workers = max(1, int(job.get("workers", 1)))
    start = time.perf_counter()
    entries = list(walk(job["folder"]))
    if job.get("limit"):
        entries = entries[:int(job["limit"])]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        loaded = list(pool.map(lambda e: load_one(e, spec, reduce_to, False), entries))
    seconds = time.perf_counter() - start
    ok = sum(1 for item in loaded if not item.error)
    result["decode"] = {"images": len(entries), "decoded": ok, "errors": len(entries) - ok,
                        "seconds": seconds, "images_per_second": ok / seconds if seconds else 0.0,
                        "workers": workers, "oversample": oversample,
                        "reduced_decode": reduce_to is not None}
    result["memory"] = {"peak_rss_mib": _peak_rss_mib()}


def measure_plain(job: dict, result: dict) -> None:
    """The plain loop (see the module docstring) over the folder's JPEGs."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import numpy as np
    import simplejpeg

    from runtime.contract.manifest import Preprocessing
    from runtime.imaging.decode import reduction_for
    from runtime.preprocess.cpu import crop
    from runtime.running.triage import reduce_to_for, walk

    spec = Preprocessing.from_dict(job["preprocessing"])
    target = reduce_to_for(spec, job.get("oversample"))
    workers = max(1, int(job.get("workers", 1)))

    def one(path: Path) -> np.ndarray:
        data = path.read_bytes()
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        factor = reduction_for(width, height, target) if target else 1
        gray = simplejpeg.decode_jpeg(data, colorspace="GRAY", min_factor=factor,
                                      min_width=-(-width // factor),
                                      min_height=-(-height // factor))[:, :, 0]
        return cv2.resize(crop(gray, spec), (spec.width, spec.height),
                          interpolation=cv2.INTER_AREA)

    start = time.perf_counter()
    paths = [e.path for e in walk(job["folder"]) if e.path.suffix.lower() in (".jpg", ".jpeg")]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = len(list(pool.map(one, paths)))
    seconds = time.perf_counter() - start
    result["decode"] = {"images": done, "seconds": seconds,
                        "images_per_second": done / seconds if seconds else 0.0,
                        "workers": workers, "oversample": job.get("oversample")}
    result["memory"] = {"peak_rss_mib": _peak_rss_mib()}


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


JOBS = {"artifact": measure_artifact, "pytorch": measure_pytorch, "decode": measure_decode,
        "plain": measure_plain}


def main() -> int:
    real_stdout = os.dup(1)
    os.dup2(2, 1)  # whatever native libraries print goes to stderr, not into the result
    result: dict[str, Any] = {"status": "ok", "error": None,
                              "load_average_start": _load_average()}
    code = 0
    try:
        job = json.loads(sys.stdin.read())
        sys.path.insert(0, str(REPO))
        if job.get("config") and job.get("data"):  # a config's ${CXR_DATA_DIR} is --data
            data = Path(job["data"])
            os.environ["CXR_DATA_DIR"] = str(data if data.is_dir() else data.parent)
        JOBS[job["kind"]](job, result)
    except BaseException as exc:  # noqa: BLE001  (every failure becomes a reported row)
        result["status"] = "failed"
        result["error"] = f"{type(exc).__name__}: {exc}".strip()
        result["traceback"] = traceback.format_exc()[-4000:]
        code = 1
    sys.stdout.flush()
    line = MARKER + " " + json.dumps(result, default=str) + "\n"
    os.write(real_stdout, line.encode())
    os.close(real_stdout)
    return code


# --------------------------------------------------------------------------------------------
# in the parent


def worker_command() -> list[str]:
    """The command that starts a worker (tests replace it to simulate a crash)."""
    return [sys.executable, "-m", "benchmarks.worker"]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    for key, value in (extra or {}).items():
        env.setdefault(key, value)
    return env


class _RssSampler(threading.Thread):
    """Polls a process's RSS with psutil (a cross-check of the kernel's peak the child reports)."""

    def __init__(self, pid: int, every: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, 0
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            process = psutil.Process(self.pid)
            while not self._halt.is_set():
                self.peak = max(self.peak, process.memory_info().rss)
                self._halt.wait(self.every)
        except (psutil.Error, OSError):
            return

    def stop(self) -> float:
        self._halt.set()
        self.join(timeout=1.0)
        return self.peak / 2 ** 20


def _describe_exit(code: int) -> str:
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def run_worker(job: dict, timeout: float = 900.0, env: dict[str, str] | None = None) -> dict:
    """Run ``job`` in a fresh worker process; always returns a result dict with a ``status``."""
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=REPO, env=_env(env), text=True)
    except OSError as exc:
        return {"status": "failed", "error": f"could not start a worker process: {exc}",
                "worker": {"returncode": None, "wall_s": 0.0}}
    sampler = _RssSampler(proc.pid)
    sampler.start()
    timed_out = False
    try:
        out, err = proc.communicate(json.dumps(job), timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        out, err = proc.communicate()
    sampled = sampler.stop()
    wall = time.perf_counter() - started
    result = None
    for line in reversed((out or "").splitlines()):
        if line.startswith(MARKER):
            try:
                result = json.loads(line[len(MARKER):])
            except ValueError:
                result = None
            break
    tail = (err or "")[-3000:]
    if timed_out:
        result = {**(result or {}), "status": "failed",
                  "error": f"timed out after {timeout:.0f} s (worker killed)"}
    elif result is None:
        result = {"status": "failed",
                  "error": f"worker {_describe_exit(proc.returncode)} without a result"
                           + (f"; last stderr: {_last_line(tail)}" if tail.strip() else "")}
    result["worker"] = {"returncode": proc.returncode, "wall_s": round(wall, 3),
                        "peak_rss_sampled_mib": round(sampled, 1) if sampled else None}
    if result.get("status") != "ok":
        result["worker"]["stderr_tail"] = tail
    return result


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


if __name__ == "__main__":
    sys.exit(main())
