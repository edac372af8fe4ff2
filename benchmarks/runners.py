"""How each engine is driven when it is timed: the way it is fastest, and what was used.

The loops in :mod:`benchmarks.measure` call a :class:`Runner`: ``run(batch)`` submits one batch,
``drain()`` waits for work still in flight (asynchronous engines), ``facts`` says how the engine
was configured. :func:`engine_runners` returns one runner for latency and one for throughput:

- **OpenVINO**: latency with the ``LATENCY`` performance hint and one synchronous infer request
  (the runtime's own compiled model when it already has that hint, the CPU plugin's default);
  throughput with the ``THROUGHPUT`` hint and an ``ov.AsyncInferQueue`` of the number of requests
  the compiled model reports as optimal (``OPTIMAL_NUMBER_OF_INFER_REQUESTS``). Both are compiled from the same IR with the inference precision
  the runtime's engine reports, so they compute what the runtime computes.
- **ONNX Runtime** on the CPU provider: the thread settings in :data:`ORT_CANDIDATES` (ONNX
  Runtime's defaults; intra-op threads = physical cores; parallel execution with inter-op threads
  = physical cores) each run a short probe; **rule**: the candidate with the most images/s at
  batch 64 runs the throughput points, the one with the most images/s at batch 1 runs the latency
  measurement. Every probe result is recorded. With ``--threads N`` (or a GPU provider, where CPU
  threads do not decide the speed) the runtime's own session is timed as it is, without a probe.
- **anything else** (PyTorch, an unknown engine): its ``run`` as it is, synchronously.

Nothing here imports torch or the converters: the build times its artifacts with these runners
too (``converters.validate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.measure import Run, Settings, throughput


def _nothing() -> None:
    return None


@dataclass
class Runner:
    """One way of running an engine: submit a batch, wait for what is in flight, say how."""

    run: Run
    drain: Callable[[], None] = _nothing
    facts: dict[str, Any] = field(default_factory=dict)
    keep: Any = None  # the engine objects the runner needs kept alive


@dataclass
class Runners:
    latency: Runner
    throughput: Runner
    tuning: dict[str, Any] | None = None  # the probe behind an automatic choice, if any

    def facts(self) -> dict[str, Any]:
        """What report.json records under ``execution.timing``."""
        return {"latency": dict(self.latency.facts), "throughput": dict(self.throughput.facts),
                "tuning": self.tuning}


def sync_runners(run: Run, **facts: Any) -> Runners:
    """The same synchronous ``run`` for latency and throughput (PyTorch, unknown engines)."""
    runner = Runner(run, facts={"api": "sync", **facts})
    return Runners(runner, runner)


def engine_runners(engine: Any, settings: Settings, inputs: np.ndarray) -> Runners:
    """The latency and throughput runners for a runtime engine (see the module docstring)."""
    name = getattr(engine, "name", "")
    if name == "openvino":
        return openvino_runners(engine, settings)
    if name == "onnxruntime":
        return onnxruntime_runners(engine, settings, inputs)
    return sync_runners(engine.run, engine=name or type(engine).__name__)


# --------------------------------------------------------------------------------------------
# OpenVINO


def _ov_text(value: Any) -> str:
    """An OpenVINO property as plain text (``PerformanceMode.LATENCY`` -> ``LATENCY``)."""
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    text = getattr(value, "name", None) or str(value)
    return text.rsplit(".", 1)[-1]


def _ov_config(hint: str, precision: str, threads: int | None) -> dict[str, object]:
    config: dict[str, object] = {"PERFORMANCE_HINT": hint}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def _ov_facts(compiled: Any, api: str, requests: int) -> dict[str, Any]:
    facts: dict[str, Any] = {"api": api, "requests": int(requests)}
    for key, prop in (("hint", "PERFORMANCE_HINT"), ("streams", "NUM_STREAMS"),
                      ("threads", "INFERENCE_NUM_THREADS"),
                      ("precision", "INFERENCE_PRECISION_HINT")):
        try:
            value = compiled.get_property(prop)
        except Exception:  # a plugin without the property: informative only
            continue
        facts[key] = int(value) if key in ("streams", "threads") else _ov_text(value)
    return facts


def openvino_runners(engine: Any, settings: Settings) -> Runners:
    """LATENCY hint + one sync request; THROUGHPUT hint + an async queue of the optimal size."""
    from runtime.engines.openvino_engine import import_openvino

    ov = import_openvino()
    device = (list(getattr(engine, "active", None) or []) or ["CPU"])[0]
    precision = str(getattr(engine, "precision", "") or "")
    core = ov.Core()
    model = core.read_model(str(engine.path))
    own_hint = _ov_text(engine.compiled.get_property("PERFORMANCE_HINT"))
    if own_hint == "LATENCY" and not settings.threads:
        latency = Runner(engine.run, facts={**_ov_facts(engine.compiled, "sync", 1),
                                            "compiled": "the runtime's engine"})
    else:
        compiled = core.compile_model(model, device,
                                      _ov_config("LATENCY", precision, settings.threads))
        request = compiled.create_infer_request()

        def run_latency(batch: np.ndarray) -> np.ndarray:
            return np.asarray(request.infer({0: batch})[compiled.output(0)])

        latency = Runner(run_latency, facts=_ov_facts(compiled, "sync", 1),
                         keep=(compiled, request))
    compiled = core.compile_model(model, device,
                                  _ov_config("THROUGHPUT", precision, settings.threads))
    requests = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    # No Python callback: a callback runs on OpenVINO's stream threads and needs the GIL, and
    # destroying the compiled model then deadlocks (the main thread joins those threads while
    # holding the GIL). benchmark_app does not read results in its loop either.
    queue = ov.AsyncInferQueue(compiled, requests)

    def run_throughput(batch: np.ndarray) -> None:
        queue.start_async({0: batch})  # blocks only while every request is busy

    throughput_runner = Runner(run_throughput, drain=queue.wait_all,
                               facts={**_ov_facts(compiled, "async", requests), "device": device},
                               keep=(compiled, queue))
    latency.facts["device"] = device
    return Runners(latency, throughput_runner)


# --------------------------------------------------------------------------------------------
# ONNX Runtime


@dataclass(frozen=True)
class OrtConfig:
    """One set of ONNX Runtime thread settings (0 = ONNX Runtime chooses)."""

    name: str
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    parallel: bool = False  # ORT_PARALLEL execution mode (else ORT_SEQUENTIAL)

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.name, "intra_op_threads": self.intra_op_threads or "default",
                "inter_op_threads": self.inter_op_threads or "default",
                "execution_mode": "parallel" if self.parallel else "sequential"}


def physical_cores() -> int:
    """Physical cores usable by this process (at least 1)."""
    import os

    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or 0
    except ImportError:
        physical = 0
    logical = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return max(1, min(physical or logical, usable))


def ort_candidates(cores: int | None = None) -> tuple[OrtConfig, ...]:
    """The thread settings probed for ONNX Runtime on the CPU (:func:`onnxruntime_runners`)."""
    cores = cores or physical_cores()
    return (OrtConfig("default"),
            OrtConfig(f"intra={cores}", intra_op_threads=cores),
            OrtConfig(f"parallel inter={cores}", inter_op_threads=cores, parallel=True),
            OrtConfig(f"parallel inter={cores} intra={cores}", intra_op_threads=cores,
                      inter_op_threads=cores, parallel=True))


ORT_RULE = ("each candidate runs batch 64 and batch 1 for a short probe; the most images/s at "
            "batch 64 runs the throughput points, the most images/s at batch 1 runs the latency")


def _ort_session(path: Path, config: OrtConfig, providers: list[str]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if config.parallel
                              else ort.ExecutionMode.ORT_SEQUENTIAL)
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def _ort_run(session: Any) -> Run:
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(batch, np.float32)})[0]
    return run


def onnxruntime_runners(engine: Any, settings: Settings, inputs: np.ndarray,
                        candidates: tuple[OrtConfig, ...] | None = None) -> Runners:
    """The fastest of the candidate thread settings for throughput and for latency (the rule:
    :data:`ORT_RULE`); the runtime's own session when threads are fixed or the provider is a
    GPU's."""
    active = list(getattr(engine, "active", None) or [])
    if active[:1] != ["CPUExecutionProvider"] or settings.threads:
        why = ("--threads given" if settings.threads else
               f"{active[0] if active else '?'} runs the model: CPU threads not probed")
        runner = Runner(engine.run, facts={"api": "sync", "providers": active,
                                           "intra_op_threads": settings.threads or "default",
                                           "config": "the runtime's session", "why": why})
        return Runners(runner, runner)
    probe = replace(settings, min_seconds=settings.probe_seconds, min_runs=2,
                    warmup=max(4, settings.warmup // 2))
    tried: list[dict[str, Any]] = []
    best: dict[int, tuple[float, OrtConfig, Any]] = {}
    for config in candidates or ort_candidates():
        session = _ort_session(engine.path, config, active)
        run = _ort_run(session)
        rates = {batch: throughput(run, inputs, batch, probe)["images_per_second"]
                 for batch in (64, 1)}
        tried.append({**config.as_dict(), "b64_images_per_second": rates[64],
                      "b1_images_per_second": rates[1]})
        for batch, rate in rates.items():
            if batch not in best or rate > best[batch][0]:
                best[batch] = (rate, config, session)
    runners = {}
    for batch in (64, 1):
        _rate, config, session = best[batch]
        runners[batch] = Runner(_ort_run(session), keep=session,
                                facts={"api": "sync", "providers": active, **config.as_dict()})
    tuning = {"rule": ORT_RULE, "probe_seconds": settings.probe_seconds, "candidates": tried,
              "latency": best[1][1].name, "throughput": best[64][1].name}
    return Runners(runners[1], runners[64], tuning)

