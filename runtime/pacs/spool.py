"""The spool: every received instance on disk, fsynced, before the sender hears "success".

Layout under the listener's ``--out`` folder: ``spool/<SOP Instance UID>.dcm`` (the folder the
folder runner triages, so a restart resumes from ``results.csv`` like any folder) and
``incoming/`` (partial writes; emptied at start-up: nothing in it was acknowledged). A file is
written to ``incoming/``, fsynced, renamed into ``spool/`` and the folder fsynced, so an instance
acknowledged to the sender survives a kill or a power cut.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

SPOOL = "spool"
INCOMING = "incoming"
SUFFIX = ".dcm"
#: a DICOM UID: digits and dots, at most 64 characters (also what makes it a safe file name)
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def is_uid(text: str) -> bool:
    """Whether ``text`` is a well-formed DICOM UID (and so a safe file name)."""
    return len(text) <= 64 and _UID.fullmatch(text) is not None


def spool_folder(out: Path) -> Path:
    return Path(out) / SPOOL


def spool_name(sop_instance_uid: str) -> str:
    """The file name (and results.csv path) of an instance."""
    return sop_instance_uid + SUFFIX


def prepare(out: Path) -> Path:
    """Create the spool, drop unacknowledged partial writes; returns the spool folder."""
    spool, incoming = spool_folder(out), Path(out) / INCOMING
    spool.mkdir(parents=True, exist_ok=True)
    incoming.mkdir(parents=True, exist_ok=True)
    for leftover in incoming.iterdir():
        leftover.unlink()
    return spool


def _fsync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_instance(out: Path, sop_instance_uid: str, data: bytes) -> Path:
    """Write one instance durably into the spool; returns its path. ValueError for a bad UID."""
    if not is_uid(sop_instance_uid):
        raise ValueError("the SOP Instance UID is not a valid UID")
    out = Path(out)
    name = spool_name(sop_instance_uid)
    partial = out / INCOMING / f"{name}.{threading.get_ident()}"
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    target = spool_folder(out) / name
    os.replace(partial, target)
    _fsync_folder(target.parent)
    return target


def received(out: Path) -> int:
    """How many instances the spool holds."""
    spool = spool_folder(out)
    return sum(1 for p in spool.iterdir() if p.name.endswith(SUFFIX)) if spool.is_dir() else 0
