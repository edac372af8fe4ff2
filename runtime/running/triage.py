"""Folder triage: walk a folder, decode in worker threads while the engine runs, write rows.

Pipeline: the folder is walked (recursive, sorted, symlink loops safe; every file gets a row),
files already in ``results.csv`` are skipped, the rest are decoded + judged by the scope rules +
cropped + resized (and given the population check's thumbnail) by ``--workers`` threads
(:mod:`runtime.imaging.pool`: the decoders release the GIL; a decode past the time
limit is abandoned as an error row) under one decode memory budget (:mod:`runtime.imaging.limits`) a few
batches ahead of the engine; the main thread scores the batch's thumbnails with the population
check together (:func:`conclude_scopes`), normalises the batch (numpy on the CPU, or the ONNX graph of
:mod:`runtime.preprocess.gpu` on CUDA), runs the model and appends one row per file. The input
folder is only ever read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from runtime.bundle.files import is_inside
from runtime.bundle.load import Bundle
from runtime.bundle.selfcheck import self_check
from runtime.contract.manifest import CHILDREN_1_TO_5, Population, Preprocessing
from runtime.errors import DecodeError
from runtime.imaging.capture import decoding_file, library_output_to
from runtime.imaging.decode import decoding
from runtime.imaging.limits import DECODE_TIMEOUT_S, DEFAULT_MEMORY_BUDGET, MemoryBudget
from runtime.imaging.pixels import Decoded
from runtime.imaging.pool import DecodePool, Job
from runtime.judging.population import PopulationCheck
from runtime.judging.scope import THUMB, Pending, Scope, assess_rules, conclude
from runtime.judging.verdict import Verdict, score_batch
from runtime.preprocess.cpu import Window, model_pixels_from_decode, normalize, reduced_window
from runtime.running.lock import FolderLock
from runtime.running.results import (
    REREAD_CHANGED,
    REREAD_RETRY,
    RESULTS,
    RUN_INFO,
    SUMMARY,
    ResultsError,
    ResultsWriter,
    Row,
    display_path,
    read_rows,
    summarize_rows,
    write_json,
)

log = logging.getLogger(__name__)

#: a JPEG is decoded at a reduced size (libjpeg's DCT scaling) only while its shorter side stays
#: >= this many times the model input (3 -> 84 px for the 28 px model, 384 px for the 128 px one).
#: The smallest scale within benchmarks.decode_scale.BOUND (99th-percentile probability change
#: <= 0.03, decisions and scope verdicts changed on <= 1% of a set, against the exact decode) for
#: both reference models on the 350 Kermany X-rays, the 843 adult X-rays and the DICOM files:
#: benchmarks/reports/decode_scale.md; tests/runtime/imaging/test_decode.py asserts the bound.
DEFAULT_OVERSAMPLE = 3
#: the run's log of library messages (decoder warnings, full error detail), in the results folder
DECODE_LOG = "decode.log"


@dataclass(frozen=True)
class Entry:
    """A file found by the walk: its path on disk and its path relative to the folder."""

    path: Path
    relative: str  # as written in results.csv (see results.display_path)
    error: str = ""  # set for a folder that could not be listed: its row says so
    reread: str = ""  # results.REREAD_CHANGED / REREAD_RETRY: the file already has a row


def walk(folder: str | os.PathLike) -> Iterator[Entry]:
    """Every file under ``folder``, recursively, in sorted order (byte order of the names).

    Every entry that is not a folder is yielded, whatever its name or type (the decoder decides
    what it is, so a pipe, a text file or a broken link gets its own error row); a folder that
    cannot be listed is yielded as an error entry naming it. Symlinked folders are followed once
    (a link back to a folder already visited is not walked again). Two names shown the same way
    (e.g. undecodable bytes) keep distinct rows: the later gets a " [n]" suffix.
    """
    root = Path(folder)
    seen: set[tuple[int, int]] = set()
    shown: set[str] = set()

    def unique(rel: bytes) -> str:
        text = display_path(rel)
        candidate, n = text, 1
        while candidate in shown:
            n += 1
            candidate = f"{text} [{n}]"
        shown.add(candidate)
        return candidate

    def visit(directory: Path, relative: bytes) -> Iterator[Entry]:
        try:
            info = os.stat(directory)
        except OSError:
            return
        key = (info.st_dev, info.st_ino)
        if key in seen:
            return
        seen.add(key)
        try:
            with os.scandir(os.fsencode(directory)) as scan:
                children = sorted(scan, key=lambda e: e.name)
        except OSError as exc:
            why = "permission denied" if isinstance(exc, PermissionError) else \
                (exc.strerror or "input/output error").lower()
            label = (relative + b"/") if relative else b"."
            yield Entry(directory, unique(label), f"folder cannot be listed ({why}): its files "
                                                   "were not triaged; give read access and rerun")
            return
        for child in children:
            name: bytes = child.name
            rel = relative + b"/" + name if relative else name
            path = directory / os.fsdecode(name)
            try:
                is_dir = child.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                yield from visit(path, rel)
            else:
                yield Entry(path, unique(rel))

    yield from visit(root, b"")


@dataclass
class Loaded:
    """What a worker hands back for one file."""

    entry: Entry
    pixels: np.ndarray | Window | None = None  # (S, S) uint8, or a Window for the GPU backend
    width: int | None = None
    height: int | None = None
    decode: str = ""
    error: str = ""
    seconds: float = 0.0
    detail: str = ""  # library detail for the log file (never shown in the row)
    scope: Scope | None = None  # runtime.judging.scope's verdict on a decoded image
    #: the rules' part of it while the population check has not answered (conclude_scopes)
    pending: Pending | None = None
    file_bytes: int | None = None  # from a stat just before decoding
    file_mtime_ns: int | None = None
    sha256: str = ""  # of the bytes decoded

    def error_row(self, error: str | None = None, seconds: float | None = None) -> Row:
        """The results row of this file when it was not scored (``error``: else its own)."""
        return Row(self.entry.relative, "error", error=error or self.error,
                   latency_ms=1000.0 * (self.seconds if seconds is None else seconds),
                   file_bytes=self.file_bytes, file_mtime_ns=self.file_mtime_ns,
                   sha256=self.sha256, reread=self.entry.reread)

    def scored_row(self, verdict: Verdict, seconds: float, classes: list[str]) -> Row:
        """The results row of this file scored with ``verdict`` (``seconds``: its whole time;
        ``classes``: the model's labels, in its output order)."""
        return Row(self.entry.relative, "ok", verdict.prediction, verdict.probability,
                   verdict.flagged, 1000.0 * seconds, "", self.width, self.height, self.decode,
                   verdict.scope.label, verdict.scope.reason, self.file_bytes,
                   self.file_mtime_ns, self.sha256, self.entry.reread,
                   verdict.by_label(classes))


def reduce_to_for(spec: Preprocessing, oversample: float | None) -> int | None:
    """The shorter side a JPEG's reduced decode keeps for ``spec``'s model: >= ``oversample`` x
    the model input's larger side, over the ``center`` crop's fraction (None: decode at full
    size, also for a resize other than area)."""
    if not oversample or spec.interpolation != "area":
        return None
    return math.ceil(max(spec.shape) * oversample / (spec.crop_fraction or 1.0))


def file_facts(path: Path) -> tuple[int | None, int | None]:
    """(size in bytes, modification time in ns) of the file at ``path``; (None, None) when it
    cannot be stat'ed (its decode says why)."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None, None
    return info.st_size, info.st_mtime_ns


def load_one(entry: Entry, spec: Preprocessing, reduce_to: int | None, windows: bool,
             budget: MemoryBudget | None = None,
             population: Population = CHILDREN_1_TO_5,
             check: PopulationCheck | None = None) -> Loaded:
    """Decode + judge the scope + crop + resize one file; never raises for a bad file.

    With the bundle's population ``check``, only the check's thumbnail is made here: the item's
    ``scope`` stays None (its ``pending`` kept) until :func:`conclude_scopes` scores a batch of
    them together.

    The file's size and modification time are taken just before it is read (a file changed
    while it is decoded shows a newer time at the next resume, which reads it again)."""
    start = time.perf_counter()
    if entry.error:
        return Loaded(entry, error=entry.error)
    size, mtime = file_facts(entry.path)
    facts = {"file_bytes": size, "file_mtime_ns": mtime}
    try:
        # library messages are written to decode.log as they happen (runtime.imaging.capture)
        with decoding_file(entry.relative), \
                decoding(entry.path, min(spec.shape), reduce_to, budget) as decoded:
            if windows:
                pixels: np.ndarray | Window = reduced_window(
                    decoded.pixels, decoded.width, decoded.height, decoded.reduction, spec)
            else:
                pixels = model_pixels_from_decode(decoded.pixels, decoded.width, decoded.height,
                                                  decoded.reduction, spec)
            thumb = pixels if is_scope_thumbnail(spec, decoded, windows) else None
            pending = assess_rules(decoded, population, check, thumb)
        scope = None if pending.check_thumbnail is not None else conclude([pending], None)[0]
        how = decoded.format + (f"/{decoded.reduction}" if decoded.reduction > 1 else "")
        return Loaded(entry, pixels, decoded.width, decoded.height, how,
                      seconds=time.perf_counter() - start, scope=scope,
                      pending=None if scope is not None else pending, sha256=decoded.sha256, **facts)
    except DecodeError as exc:
        return Loaded(entry, error=str(exc), seconds=time.perf_counter() - start,
                      detail=exc.detail, **facts)
    except MemoryError:
        return Loaded(entry, error="image too large to decode in the memory available",
                      seconds=time.perf_counter() - start, **facts)
    except Exception as exc:  # a decoder bug must not stop the run: report it on this file
        return Loaded(entry, error="the file could not be decoded (unexpected decoder failure; "
                                   "details in the run's decode.log)",
                      seconds=time.perf_counter() - start,
                      detail="".join(traceback.format_exception(exc)).strip(), **facts)


def conclude_scopes(items: Sequence[Loaded], check: PopulationCheck | None) -> None:
    """Give every decoded item of a batch still waiting for the population check its scope:
    the check scores their thumbnails together (:func:`runtime.judging.scope.conclude`)."""
    waiting = [item for item in items if item.scope is None and item.pending is not None]
    if not waiting:
        return
    for item, scope in zip(waiting, conclude([item.pending for item in waiting], check)):
        item.scope, item.pending = scope, None


def is_scope_thumbnail(spec: Preprocessing, decoded: Decoded, windows: bool) -> bool:
    """Whether the model pixels of ``decoded`` are exactly the scope rules' thumbnail (the whole
    image area-resized by OpenCV to THUMB px: a full decode, no crop), so it is made once."""
    return (not windows and decoded.reduction == 1 and spec.crop == "none"
            and spec.interpolation == "area" and spec.shape == (THUMB, THUMB))


def timed_out(entry: Entry, seconds: float) -> Loaded:
    """The row of a file whose decode ran past the time limit (and was abandoned)."""
    size, mtime = file_facts(entry.path)
    return Loaded(entry, error=f"decoding took longer than {seconds:.0f} s and was abandoned (a "
                               "very large or damaged file, or a slow or busy disk); rerun with "
                               "--retry-errors to try it again", seconds=seconds,
                  file_bytes=size, file_mtime_ns=mtime)


@dataclass
class TriageResult:
    """What a run did (this run only) plus the summary written to summary.json."""

    out: Path
    processed: int = 0
    skipped: int = 0
    found: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    summary: dict = field(default_factory=dict)

    @property
    def results_csv(self) -> Path:
        return self.out / RESULTS

    @property
    def summary_json(self) -> Path:
        return self.out / SUMMARY


def files_to_do(folder: Path, writer: ResultsWriter, result: TriageResult,
                on_total: Callable[[int], None] | None = None,
                retry_errors: bool = False) -> list[Entry]:
    """The walk's files still to score (counted in ``result``): those without a row, those that
    changed since their row (size or modification time), and with ``retry_errors`` those whose
    row is an error; a file read again is marked in its entry's ``reread``."""
    entries = list(walk(folder))
    todo: list[Entry] = []
    for entry in entries:
        row = writer.rows.get(entry.relative)
        if row is None:
            todo.append(entry)
        elif changed(entry, row):
            todo.append(dataclasses.replace(entry, reread=REREAD_CHANGED))
        elif retry_errors and row.get("status") == "error":
            todo.append(dataclasses.replace(entry, reread=REREAD_RETRY))
    result.found, result.skipped = len(entries), len(entries) - len(todo)
    if on_total:
        on_total(len(todo))
    return todo


def changed(entry: Entry, row: dict[str, str]) -> bool:
    """Whether the file of ``entry`` differs from when ``row`` was written (size or modification
    time; a row without them, from an older runner, counts as unchanged)."""
    if not row.get("file_bytes") or not row.get("file_mtime_ns") or entry.error:
        return False
    size, mtime = file_facts(entry.path)
    return size is not None and (str(size), str(mtime)) != (row["file_bytes"],
                                                            row["file_mtime_ns"])


def check_out_dir(folder: Path, out: Path) -> None:
    """Refuse an output folder inside the input folder (the input is never written to)."""
    if is_inside(out, folder):
        raise ResultsError(f"--out {out} is inside the input folder {folder}; the input folder is "
                           "never written to: choose an output folder elsewhere")


def check_run_info(out: Path, info: dict) -> None:
    """A results folder holds the results of one model: refuse to mix another one in."""
    path = out / RUN_INFO
    if not path.exists():
        if (out / RESULTS).exists() and read_rows(out / RESULTS):
            raise ResultsError(f"{out / RESULTS} exists without {RUN_INFO}; cannot tell which model "
                               "produced it: choose another --out folder")
        write_json(path, info)
        return
    import json

    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path} is unreadable ({exc}); choose another --out folder") from exc
    for key in ("folder", "sha256", "threshold", "thresholds", "oversample"):
        if previous.get(key) != info.get(key):
            show = "artifact" if key == "sha256" else key
            raise ResultsError(
                f"{out} holds results of another run ({show}: {previous.get(show)!r}, now "
                f"{info.get(show)!r}); resume needs the same folder, artifact and settings: "
                "choose another --out folder")


def open_results_folder(out: Path, folder: Path, bundle: Bundle, oversample: float | None) -> None:
    """Create ``out`` and record (or, on resume, check) which run its results belong to."""
    described = bundle.describe()
    out.mkdir(parents=True, exist_ok=True)
    # every finding's threshold, for a model with several (a model with one: ``threshold`` is it,
    # and its run.json stays as it always was)
    several = {"thresholds": bundle.thresholds} if len(bundle.findings) > 1 else {}
    check_run_info(out, {"folder": str(folder.resolve()), "sha256": described["sha256"],
                         "artifact": described["artifact"], "threshold": bundle.threshold,
                         **several, "oversample": oversample,
                         "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})


def triage(folder: str | os.PathLike, bundle: Bundle, out: str | os.PathLike, *,
           batch: int = 32, workers: int = 2, backend: str = "auto",
           oversample: float | None = DEFAULT_OVERSAMPLE,
           progress: Callable[[int, int], None] | None = None,
           on_total: Callable[[int], None] | None = None,
           on_row: Callable[[Row], None] | None = None,
           memory_budget: int = DEFAULT_MEMORY_BUDGET,
           decode_timeout: float = DECODE_TIMEOUT_S,
           check_device: bool = True, retry_errors: bool = False) -> TriageResult:
    """Triage every image under ``folder`` into ``out``; see the module docstring.

    ``backend``: "cpu", "gpu" or "auto" (the bundle's preprocessing backend, GPU only on CUDA).
    ``oversample``: JPEG reduced decode keeps >= oversample x model size pixels (None: full decode).
    ``memory_budget``: bytes of decode memory shared by the workers (:mod:`runtime.imaging.limits`);
    ``decode_timeout``: seconds after which one file's decode is abandoned (an error row).
    Library messages go to ``out/decode.log``, not the console.
    ``progress(done, failed)`` is called after each row; KeyboardInterrupt stops cleanly (rows
    written so far are kept, summary marked interrupted) and is re-raised after the summary.
    ``on_row(row)`` is handed each row of this run just after it is appended to results.csv (before
    ``progress``), in the file's order: a caller can show the rows without reading the file.
    ``check_device``: first re-run the bundle's reference set with this artifact on this device
    (:func:`runtime.bundle.selfcheck.self_check`, cached); raises SelfCheckError when it answers
    differently, before anything is written.
    ``retry_errors``: score again the files whose current row is an error (a changed file is
    always scored again). One run at a time writes ``out`` (:mod:`runtime.running.lock`): another
    run's folder raises :class:`runtime.running.lock.FolderBusy`.
    """
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder not found: {folder}")
    check_out_dir(folder, out)
    device_check = self_check(bundle, never_inside=folder) if check_device else None
    spec = bundle.preprocessing
    reduce_to = reduce_to_for(spec, oversample)
    gpu = None
    if backend == "gpu" or (backend == "auto" and bundle.preprocessing_backend == "gpu"
                            and bundle.device == "cuda"):
        from runtime.preprocess.gpu import CUDA, GpuPreprocessor, cannot_run

        providers = [CUDA, "CPUExecutionProvider"] if bundle.device == "cuda" else \
            ["CPUExecutionProvider"]
        why_not = cannot_run(spec)
        if why_not:
            log.warning(why_not)
        else:
            gpu = GpuPreprocessor(spec, providers)
    backend_used = "gpu" if gpu is not None else "cpu"

    with FolderLock(out) as lock:
        open_results_folder(out, folder, bundle, oversample)
        result = TriageResult(out=out)
        started_at = dt.datetime.now(dt.timezone.utc)
        start = time.perf_counter()
        failed = 0
        with ResultsWriter(out, bundle.classes) as writer:
            todo = files_to_do(folder, writer, result, on_total, retry_errors)
            pending: deque[Job] = deque()
            items = iter(todo)
            ahead = max(2 * batch, 4 * workers)
            budget = MemoryBudget(memory_budget)
            pool = DecodePool(workers, decode_timeout)
            log_path = out / DECODE_LOG
            quiet_libraries = library_output_to(log_path)
            quiet_libraries.__enter__()

            def fill() -> None:
                while len(pending) < ahead:
                    entry = next(items, None)
                    if entry is None:
                        return
                    pending.append(pool.submit(load_one, entry, spec, reduce_to, gpu is not None,
                                               budget, bundle.population,
                                               bundle.population_check))

            def record(row: Row) -> None:
                """Append one row, then tell the caller (on_row, progress)."""
                nonlocal failed
                if not writer.write(row):
                    return
                failed += row.status == "error"
                if on_row:
                    on_row(row)
                result.processed += 1
                if progress:
                    progress(result.processed, failed)

            def flush(ready: list[Loaded]) -> None:
                if not ready:
                    return
                t0 = time.perf_counter()
                conclude_scopes(ready, bundle.population_check)
                if gpu is not None:
                    inputs = gpu([item.pixels for item in ready])
                else:
                    inputs = normalize(np.stack([item.pixels for item in ready]), spec)
                verdicts = score_batch(bundle, inputs, [item.scope for item in ready])
                share = (time.perf_counter() - t0) / len(ready)
                for item, verdict in zip(ready, verdicts):
                    record(item.scored_row(verdict, item.seconds + share, bundle.classes)
                           if verdict.ok
                           else item.error_row(verdict.error, item.seconds + share))
                writer.sync()

            ready: list[Loaded] = []
            try:
                fill()
                while pending:
                    job = pending.popleft()
                    item = pool.wait(job, lambda j: timed_out(j.args[0], decode_timeout))
                    fill()
                    if item.detail:
                        log_detail(log_path, item.entry.relative, item.error, item.detail)
                    if item.error:
                        record(item.error_row())
                        continue
                    ready.append(item)
                    if len(ready) >= batch:
                        flush(ready)
                        ready = []
                flush(ready)
            except KeyboardInterrupt:
                result.interrupted = True
            finally:
                pool.shutdown(list(pending))
                quiet_libraries.__exit__(None, None, None)
                result.seconds = time.perf_counter() - start
                result.summary = run_summary(folder, out, bundle, result, backend_used, oversample,
                                          started_at, failed, batch, workers, memory_budget)
                result.summary["device_check"] = device_check
                if lock.taken_over:
                    result.summary["lock_taken_over"] = lock.taken_over.words()
        write_json(out / SUMMARY, result.summary)
        if result.interrupted:
            raise KeyboardInterrupt
        return result


def log_detail(log_path: Path, relative: str, error: str, detail: str) -> None:
    """Append a file's library detail (full decoder messages) to the run's decode log."""
    with open(log_path, "a", encoding="utf-8", errors="backslashreplace") as log:
        text = detail.replace("\n", "\n    ")
        log.write(f"{relative}: {error or 'scored'}\n    {text}\n")


def _peak_rss_mib() -> float | None:
    """Peak resident memory of this process so far (None where it cannot be read)."""
    try:
        import resource  # POSIX only

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(kib / (1024.0 * 1024.0 if os.uname().sysname == "Darwin" else 1024.0), 1)
    except (ImportError, AttributeError):
        try:
            import psutil

            info = psutil.Process().memory_info()
            return round(getattr(info, "peak_wset", info.rss) / 2**20, 1)
        except Exception:
            return None


def run_summary(folder: Path, out: Path, bundle: Bundle, result: TriageResult, backend: str,
             oversample: float | None, started_at: dt.datetime, failed: int, batch: int,
             workers: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> dict:
    counts = summarize_rows(read_rows(out / RESULTS))
    rate = result.processed / result.seconds if result.seconds > 0 else 0.0
    peak_mib = _peak_rss_mib()
    return {
        "folder": str(folder), "results": str(out / RESULTS),
        "counts": counts,
        "this_run": {"found": result.found, "skipped_already_done": result.skipped,
                     "processed": result.processed, "errors": failed,
                     "seconds": round(result.seconds, 3), "images_per_second": round(rate, 2),
                     "interrupted": result.interrupted, "started_at":
                         started_at.isoformat(timespec="seconds"),
                     "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "peak_rss_mib": peak_mib, "batch": batch,
                     "decode_memory_budget_mib": round(memory_budget / 2**20),
                     "workers": workers},
        "bundle": bundle.describe(), "notes": list(bundle.notes),
        "preprocessing": {**bundle.preprocessing.as_dict(), "backend": backend,
                          "jpeg_reduced_decode": bool(oversample),
                          "oversample": oversample},
    }

