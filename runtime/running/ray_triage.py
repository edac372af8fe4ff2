"""Archive triage on Ray: the folder runner's pieces, spread over a Ray cluster with Ray Data.

The driver (this process) does what the single-process runner (:mod:`runtime.running.triage`) does before
and after the work: it walks the folder (:func:`runtime.running.triage.walk`: the same ``Entry`` rows,
unlistable folders and colliding names included), refuses another run's results folder, runs the
bundle's self-check, and skips the files already in ``results.csv``. The files still to do become
a Ray Dataset of paths; decode tasks (``map_batches`` of :func:`decode_batch`) run
:func:`runtime.running.triage.load_one` on each file under the decode time limit of :mod:`runtime.imaging.pool`
(the population check scores the task's thumbnails together at its end:
:func:`runtime.running.triage.conclude_scopes`) and ship the model-size pixels and scope verdicts;
an actor pool (``map_batches`` of :class:`EngineActor`, one bundle
opened per actor) normalises them (:func:`runtime.preprocess.cpu.normalize`) and decides every image
with :func:`runtime.judging.verdict.score_batch`. Rows stream back to the driver, which appends them to
``results.csv`` with :class:`runtime.running.results.ResultsWriter` as they arrive (fsynced after each
batch), so a killed run resumes without losing or duplicating a row. Rows come back in the order
Ray finishes them, not in walk order.

The input folder and the bundle must be readable at the same path on every node (a shared
filesystem); each actor checks that it opened the same artifact (sha256) the driver checked.
Ray is imported only here, and only when a Ray run starts (``pip install 'cxr-deploy-kit[ray]'``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from runtime.bundle.load import Bundle
from runtime.bundle.selfcheck import self_check
from runtime.contract.manifest import Population, Preprocessing
from runtime.imaging.capture import library_output_to
from runtime.imaging.limits import DECODE_TIMEOUT_S, DEFAULT_MEMORY_BUDGET, MemoryBudget
from runtime.imaging.pool import DecodePool
from runtime.judging.population import PopulationCheck
from runtime.judging.scope import Scope
from runtime.judging.verdict import Verdict, score_batch
from runtime.preprocess.cpu import normalize
from runtime.running.lock import FolderLock
from runtime.running.results import SUMMARY, ResultsWriter, Row, write_json
from runtime.running.triage import (
    DECODE_LOG,
    DEFAULT_OVERSAMPLE,
    Entry,
    Loaded,
    TriageResult,
    check_out_dir,
    conclude_scopes,
    files_to_do,
    load_one,
    log_detail,
    open_results_folder,
    reduce_to_for,
    run_summary,
    timed_out,
)

#: what a local Ray started by this runner may use for its object store (decoded pixels in flight)
LOCAL_OBJECT_STORE_BYTES = 300 * 2**20
#: the CPU share Ray reserves for one engine actor: the shipped 28 px model costs a small fraction
#: of the decode work per image, so an actor leaves most of a core to the decode tasks
DEFAULT_ACTOR_CPUS = 0.5
#: files per decode task (small: a task's rows reach the engine and the CSV sooner)
DECODE_BATCH = 64


class RaySetupError(RuntimeError):
    """Ray is not installed, the cluster cannot be reached, or it is too small for the pool."""


class RayRunError(RuntimeError):
    """The run failed inside Ray (an actor could not open the bundle, a node went away, ...)."""


def import_ray():
    """The ``ray`` module, or a plain-words error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is a separate extra of ray)
    except ImportError as exc:
        raise RaySetupError(f"--ray needs Ray Data, which is not installed ({exc}); install it "
                             "with: pip install 'cxr-deploy-kit[ray]'") from None
    return ray


def start_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray when it is None.

    Returns True when this call started (or connected) Ray, so the caller shuts it down; an
    already initialised Ray (a test session, a notebook) is used as it is and left running.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, log_to_driver=False,
                     logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise RaySetupError(f"could not start or reach {where}: {exc}; check the address "
                             "(e.g. ray://head:10001 or auto on a cluster node)") from exc
    return True


# --- decode tasks ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodeSettings:
    """What every decode task needs (shipped once with the task definition)."""

    spec: Preprocessing
    reduce_to: int | None
    population: Population
    timeout: float
    memory_budget: int
    check: PopulationCheck | None = None  # the bundle's population check (pickled without a session)


#: what a decoded record carries about its file through the actors to the driver's row
FILE_FACTS = ("reread", "sha256", "file_bytes", "file_mtime_ns")
_worker_state: dict[str, Any] = {}  # per Ray worker process: its decode pool and memory budget


def _worker_pool(settings: DecodeSettings) -> tuple[DecodePool, MemoryBudget]:
    """This worker process's decode thread (kept across tasks) and decode memory budget."""
    key = (settings.timeout, settings.memory_budget)
    if _worker_state.get("key") != key:
        _worker_state.update(key=key, pool=DecodePool(1, settings.timeout, "ray-decode"),
                             budget=MemoryBudget(settings.memory_budget))
    return _worker_state["pool"], _worker_state["budget"]


def entry_items(entries: list[Entry]) -> list[dict[str, Any]]:
    """Dataset rows for ``entries`` (paths as bytes: any name survives the trip)."""
    return [{"path": os.fsencode(e.path), "relative": e.relative, "walk_error": e.error,
             "reread": e.reread} for e in entries]


def decode_batch(batch: dict[str, np.ndarray], settings: DecodeSettings) -> dict[str, Any]:
    """Ray Data task: :func:`runtime.running.triage.load_one` on each file of ``batch`` (never
    raises), then the population check on the batch's thumbnails, scored together.

    Library messages are caught as in the folder runner and shipped back (``log`` column, on the
    batch's first row) for the driver's decode.log.
    """
    pool, budget = _worker_pool(settings)
    loaded: list[Loaded] = []
    with tempfile.TemporaryDirectory(prefix="cxr-ray-decode-") as scratch:
        log_path = Path(scratch) / DECODE_LOG
        with library_output_to(log_path):
            for raw, relative, error, reread in zip(batch["path"], batch["relative"],
                                                    batch["walk_error"], batch["reread"]):
                entry = Entry(Path(os.fsdecode(bytes(raw))), str(relative), str(error),
                              str(reread))
                job = pool.submit(load_one, entry, settings.spec, settings.reduce_to, False,
                                  budget, settings.population, settings.check)
                loaded.append(pool.wait(job, lambda j: timed_out(j.args[0], settings.timeout)))
        conclude_scopes(loaded, settings.check)
        messages = log_path.read_text(encoding="utf-8", errors="replace") \
            if log_path.exists() else ""
    ok = [item.error == "" for item in loaded]
    blank = np.zeros(settings.spec.shape, np.uint8)
    return {
        "relative": [item.entry.relative for item in loaded],
        "ok": ok,
        "pixels": np.stack([item.pixels if good else blank for item, good in zip(loaded, ok)]),
        "error": [item.error for item in loaded],
        "detail": [item.detail for item in loaded],
        "seconds": [item.seconds for item in loaded],
        "width": [item.width or 0 for item in loaded],
        "height": [item.height or 0 for item in loaded],
        "decode": [item.decode for item in loaded],
        "scope": [json.dumps(asdict(item.scope)) if item.scope else "" for item in loaded],
        "log": [messages] + [""] * (len(loaded) - 1),
        "reread": [item.entry.reread for item in loaded],
        "sha256": [item.sha256 for item in loaded],
        # -1: not known (the file could not be stat'ed)
        "file_bytes": [-1 if item.file_bytes is None else item.file_bytes for item in loaded],
        "file_mtime_ns": [-1 if item.file_mtime_ns is None else item.file_mtime_ns
                          for item in loaded],
    }


# --- engine actors -----------------------------------------------------------------------------

class EngineActor:
    """Ray Data actor: one bundle (engine) per actor; scores the decoded images it is handed."""

    def __init__(self, bundle_path: str, artifact: str, device: str, sha256: str,
                 threads: int | None):
        from runtime.bundle.load import load_bundle

        self.bundle = load_bundle(bundle_path, artifact, device=device, threads=threads)
        if self.bundle.artifact.sha256 != sha256:
            raise RuntimeError(f"{bundle_path}/{artifact} on this node is not the artifact the "
                               "driver checked (sha256 differs): give every node the same bundle")
        self_check(self.bundle)  # this node's engine and libraries answer as at build

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        n = len(batch["relative"])
        ok = np.asarray(batch["ok"], dtype=bool).copy()
        error = [str(e) for e in batch["error"]]
        probability = np.full(n, np.nan)
        probabilities = np.full((n, len(self.bundle.classes)), np.nan)  # every label's
        flagged = np.zeros(n, dtype=bool)
        prediction = [""] * n
        verdicts: list[Verdict | None] = [None] * n
        seconds = np.asarray(batch["seconds"], dtype=np.float64).copy()
        scored = np.flatnonzero(ok)
        if len(scored):
            t0 = time.perf_counter()
            inputs = normalize(np.stack([batch["pixels"][i] for i in scored]),
                               self.bundle.preprocessing)
            scopes = [Scope(**json.loads(str(batch["scope"][i]))) if batch["scope"][i] else None
                      for i in scored]
            decided = score_batch(self.bundle, inputs, scopes)
            share = (time.perf_counter() - t0) / len(scored)
            for i, verdict in zip(scored, decided):
                seconds[i] += share
                if not verdict.ok:  # this image only: an error row, the batch is scored
                    ok[i], error[i] = False, verdict.error
                    continue
                verdicts[i] = verdict
                probability[i] = verdict.probability
                probabilities[i] = verdict.probabilities
                flagged[i] = verdict.flagged
                prediction[i] = verdict.prediction
        out = {key: batch[key] for key in ("relative", "detail", "width", "height", "decode",
                                           "log", *FILE_FACTS)}
        out.update(ok=ok, error=error, probability=probability, probabilities=probabilities,
                   flagged=flagged,
                   prediction=prediction, seconds=seconds,
                   scope=[v.scope.label if v else "" for v in verdicts],
                   scope_reason=[v.scope.reason if v else "" for v in verdicts])
        return out


def row_of(record: dict[str, Any], classes: Sequence[str] = ()) -> Row:
    """The results.csv row of one record streamed back from the actors (``classes``: the model's
    labels, naming the record's ``probabilities``)."""
    facts = {"reread": str(record["reread"]), "sha256": str(record["sha256"]),
             **{key: None if int(record[key]) < 0 else int(record[key])
                for key in ("file_bytes", "file_mtime_ns")}}
    if not record["ok"]:
        return Row(str(record["relative"]), "error", error=str(record["error"]),
                   latency_ms=1000.0 * float(record["seconds"]), **facts)
    return Row(str(record["relative"]), "ok", str(record["prediction"]),
               float(record["probability"]), bool(record["flagged"]),
               1000.0 * float(record["seconds"]), "", int(record["width"]),
               int(record["height"]), str(record["decode"]), str(record["scope"]),
               str(record["scope_reason"]),
               probabilities=dict(zip(classes, (float(v) for v in record["probabilities"]))),
               **facts)


# --- the pipeline --------------------------------------------------------------------------------

def scored_dataset(ray, todo: list[Entry], bundle: Bundle, settings: DecodeSettings, actors: int,
                   actor_cpus: float, actor_threads: int | None, batch: int):
    """The Ray Dataset of scored records for ``todo``: decode tasks, then the engine actors."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the runner shows its own progress
    ctx.print_on_execution_start = False
    items = ray.data.from_items(entry_items(todo),
                                override_num_blocks=decode_tasks(len(todo), actors))
    # one decode task per block; decode tasks and actors reserve different CPU shares, so Ray
    # Data keeps them apart (not fused into the actors): decoding is not limited to the actors
    decoded = items.map_batches(decode_batch, batch_size=None, num_cpus=1,
                                fn_kwargs={"settings": settings})
    return decoded.map_batches(
        EngineActor, batch_size=batch, compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=actor_cpus,
        fn_constructor_kwargs={"bundle_path": str(Path(bundle.path).resolve()),
                               "artifact": bundle.artifact.path, "device": bundle.device,
                               "sha256": bundle.artifact.sha256, "threads": actor_threads})


def write_records(records: dict[str, np.ndarray], writer: ResultsWriter, log_path: Path) -> int:
    """Append one streamed batch's rows (and library messages) to the results; its error count."""
    errors = 0
    for i in range(len(records["relative"])):
        record = {key: values[i] for key, values in records.items()}
        if record["log"]:
            with open(log_path, "a", encoding="utf-8", errors="backslashreplace") as log:
                log.write(str(record["log"]))
        row = row_of(record, writer.labels)
        if record["detail"]:
            log_detail(log_path, row.path, row.error, str(record["detail"]))
        if writer.write(row):
            errors += row.status == "error"
    return errors


# --- the driver --------------------------------------------------------------------------------

def ray_triage(folder: str | os.PathLike, bundle: Bundle, out: str | os.PathLike, *,
               address: str | None = None, actors: int = 2, batch: int = 32,
               oversample: float | None = DEFAULT_OVERSAMPLE,
               progress: Callable[[int, int], None] | None = None,
               on_total: Callable[[int], None] | None = None,
               memory_budget: int = DEFAULT_MEMORY_BUDGET,
               decode_timeout: float = DECODE_TIMEOUT_S,
               actor_cpus: float = DEFAULT_ACTOR_CPUS, actor_threads: int | None = 1,
               check_device: bool = True, retry_errors: bool = False) -> TriageResult:
    """Triage every file under ``folder`` into ``out`` on Ray; see the module docstring.

    Same contract and arguments as :func:`runtime.running.triage.triage`, plus ``address`` (None: start
    a local Ray on this machine's cores, or use the one already initialised), ``actors`` (engine
    actors, one bundle each), ``actor_cpus`` (the CPU share Ray reserves for each actor; the rest
    of the cluster's CPUs run decode tasks) and ``actor_threads`` (engine threads per actor; None:
    the engine's default). ``memory_budget`` is per decode worker process. Normalisation runs in
    numpy (the CPU backend). KeyboardInterrupt stops cleanly: rows written so far are kept.
    """
    ray = import_ray()  # before anything is written
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder not found: {folder}")
    if actors < 1 or batch < 1:
        raise ValueError("actors and batch must be at least 1")
    check_out_dir(folder, out)
    device_check = self_check(bundle, never_inside=folder) if check_device else None
    spec = bundle.preprocessing
    reduce_to = reduce_to_for(spec, oversample)
    with FolderLock(out):
        open_results_folder(out, folder, bundle, oversample)
        started_ray = start_ray(address)
        cluster_cpus = _cluster_cpus(ray)
        try:
            check_resources(actors, actor_cpus, cluster_cpus)
        except RaySetupError:
            if started_ray:
                ray.shutdown()
            raise
        result = TriageResult(out=out)
        started_at = dt.datetime.now(dt.timezone.utc)
        start = time.perf_counter()
        failed = 0
        first_row_s: float | None = None  # start-up: actors loading their bundles, first decodes
        first_rows = 0
        failure: RayRunError | None = None
        log_path = out / DECODE_LOG
        try:
            with ResultsWriter(out, bundle.classes) as writer:
                todo = files_to_do(folder, writer, result, on_total, retry_errors)
                try:
                    if todo:
                        settings = DecodeSettings(spec, reduce_to, bundle.population,
                                                  decode_timeout, memory_budget,
                                                  bundle.population_check)
                        scored = scored_dataset(ray, todo, bundle, settings, actors, actor_cpus,
                                                actor_threads, batch)
                        for records in scored.iter_batches(batch_size=None, batch_format="numpy"):
                            failed += write_records(records, writer, log_path)
                            if first_row_s is None:
                                first_row_s = time.perf_counter() - start
                                first_rows = writer.written
                            for done in range(result.processed + 1, writer.written + 1):
                                result.processed = done
                                if progress:
                                    progress(done, failed)
                            writer.sync()
                except KeyboardInterrupt:
                    result.interrupted = True
                except ray.exceptions.RayError as exc:
                    failure = RayRunError(
                        f"the Ray run stopped: {_last_line(exc)}; the {writer.written} rows "
                        "written so far are kept: fix the cause and rerun the same command to "
                        "resume")
                finally:
                    result.seconds = time.perf_counter() - start
        finally:
            if started_ray:
                ray.shutdown()
        result.summary = run_summary(folder, out, bundle, result, "cpu", oversample, started_at,
                                     failed, batch, 0, memory_budget)
        this_run = result.summary["this_run"]
        this_run.pop("workers")  # the folder runner's decode threads: here Ray's decode tasks
        this_run["ray"] = {"address": address or "local", "actors": actors,
                           "actor_cpus": actor_cpus, "actor_threads": actor_threads,
                           "cluster_cpus": cluster_cpus,
                           "first_rows_after_s": None if first_row_s is None
                           else round(first_row_s, 3),
                           "images_per_second_after_first_rows": _rate(
                               result.processed - first_rows, result.seconds - (first_row_s or 0)),
                           "ray_version": ray.__version__}
        result.summary["device_check"] = device_check
        write_json(out / SUMMARY, result.summary)
        if failure is not None:
            raise failure
        if result.interrupted:
            raise KeyboardInterrupt
        return result


def decode_tasks(files: int, actors: int) -> int:
    """How many decode tasks (Dataset blocks): DECODE_BATCH files each, and enough to feed every
    actor from the start on a small folder."""
    return max(1, min(files, max(-(-files // DECODE_BATCH), 2 * actors)))


def check_resources(actors: int, actor_cpus: float, cluster_cpus: float | None) -> None:
    """Refuse a pool of actors that would leave no whole CPU for the decode tasks (a hang)."""
    if actor_cpus <= 0:
        raise RaySetupError(f"--actor-cpus must be above 0, not {actor_cpus}")
    if cluster_cpus is not None and cluster_cpus - actors * actor_cpus < 1:
        raise RaySetupError(f"{actors} engine actors x {actor_cpus:g} CPU leave no whole CPU for "
                         f"the decode tasks on a Ray cluster of {cluster_cpus:g} CPUs: use fewer "
                         "--actors or a smaller --actor-cpus")


def _last_line(exc: BaseException) -> str:
    """The root cause of a Ray error in one line (Ray's text carries the remote traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:500] if lines else type(exc).__name__


def _rate(images: int, seconds: float) -> float | None:
    return round(images / seconds, 2) if images > 0 and seconds > 0 else None


def _cluster_cpus(ray) -> float | None:
    try:
        return ray.cluster_resources().get("CPU")
    except Exception:  # a cluster that went away meanwhile: not worth failing the summary
        return None
