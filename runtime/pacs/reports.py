"""One DICOM SR per triaged DICOM row, written once into ``sr/`` (the outbox sends from there).

The reports are :func:`runtime.clinic.report_sr.build_report`'s, as ``report-sr`` writes them:
in the source image's study, with the flag as a coded finding. An SR is written once per row:
a row whose ``sr/<name>.sr.dcm`` exists is done (the file is written atomically), so a restart
never makes a second SR for an image. The SR series of a study is the same across restarts (its
UID derived from the study and the artifact).

A reviewer's decision made later (the app's review of this folder appends to ``review.csv``)
goes out as an amended SR: the same report with the decision, reviewer and notes, listing the
SRs it amends as predecessor documents, named ``<name>.review-<key>.sr.dcm`` where the key
digests the decision, reviewer, time and notes; each new state of a case is amended once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from runtime.bundle.hashing import sha256_file
from runtime.clinic.report_sr import (
    SR_SUFFIX,
    RunIdentity,
    build_report,
    read_run,
    sr_path,
)
from runtime.clinic.review import REVIEW, CaseReview, ReviewLog
from runtime.errors import DecodeError
from runtime.imaging.dicom import read_dataset
from runtime.running.results import RESULTS, read_rows

SR_FOLDER = "sr"


@dataclass
class NewReports:
    """What one pass wrote and which rows could not be reported (path, why)."""

    written: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _source(path: Path):
    """(header without pixels, sha256) of a spooled instance; ValueError saying why not."""
    try:
        ds = read_dataset(path, force=True, stop_before_pixels=True)
    except DecodeError as exc:  # its message may quote the header: not for the console
        raise ValueError("it no longer reads as DICOM") from exc
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                           "SOPClassUID") if not ds.get(k)]
    if missing:
        raise ValueError(f"it has no {', '.join(missing)}: an SR cannot reference it")
    return ds, sha256_file(path)


def _series_uid(study_uid: str, run: RunIdentity) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[study_uid, run.sha256, "cxr-deploy-kit SR series"])


def write_new_reports(out: Path, skip: frozenset[str] | set[str] = frozenset()) -> NewReports:
    """Write the SR of every scored DICOM row of ``out/results.csv`` that has none yet (``skip``:
    rows already found unreportable by this process)."""
    out = Path(out)
    done = NewReports()
    rows = read_rows(out / RESULTS)
    todo = [(n, row) for n, row in enumerate(rows, 1) if row.get("status") == "ok"
            and row.get("decode", "").startswith("dicom")
            and row["path"] not in skip and not sr_path(out / SR_FOLDER, row["path"]).exists()]
    if not todo:
        return done
    run = read_run(out)
    for number, row in todo:
        relative = row["path"]
        try:
            source, digest = _source(run.folder / relative)
        except (ValueError, OSError) as exc:
            done.problems.append((relative, str(exc)))
            continue
        report = build_report(source, row, run, digest, None,
                              _series_uid(str(source.StudyInstanceUID), run), number)
        done.written.append(_save(report, sr_path(out / SR_FOLDER, relative)))
    return done


def _save(report, target: Path) -> Path:
    """Write an SR atomically (temp file + rename); returns ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".tmp")
    report.save_as(partial, enforce_file_format=True)
    partial.replace(target)
    return target


def amended_path(out: Path, relative: str, case: CaseReview) -> Path:
    """Where the amended SR of one state of a reviewed case goes."""
    key = hashlib.sha256("\n".join([case.decision, case.reviewer, case.time, *case.notes])
                         .encode("utf-8")).hexdigest()[:12]
    return out / SR_FOLDER / f"{relative}.review-{key}{SR_SUFFIX}"


def write_amended_reports(out: Path) -> NewReports:
    """An amended SR for every reviewed case whose current decision has none yet."""
    import pydicom

    out = Path(out)
    done = NewReports()
    if not (out / REVIEW).is_file():
        return done
    rows = {row["path"]: (n, row) for n, row in enumerate(read_rows(out / RESULTS), 1)}
    run = None
    for relative, case in ReviewLog(out).cases().items():
        first = sr_path(out / SR_FOLDER, relative)
        target = amended_path(out, relative, case)
        if not case.decision or relative not in rows or not first.is_file() or target.exists():
            continue
        run = run or read_run(out)
        try:
            source, digest = _source(run.folder / relative)
        except (ValueError, OSError) as exc:
            done.problems.append((relative, str(exc)))
            continue
        earlier = sorted(first.parent.glob(f"{first.name[:-len(SR_SUFFIX)]}.review-*{SR_SUFFIX}"),
                         key=lambda p: p.stat().st_mtime_ns)
        previous = [pydicom.dcmread(p, stop_before_pixels=True) for p in [first, *earlier]]
        number, row = rows[relative]
        report = build_report(source, row, run, digest, case,
                              _series_uid(str(source.StudyInstanceUID), run), number, previous)
        done.written.append(_save(report, target))
    return done
