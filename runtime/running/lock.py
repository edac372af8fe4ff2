"""One writer per results folder: ``results.lock`` names the run that holds it.

A run holds an exclusive OS lock (``flock``, POSIX) on ``out/results.lock``
for as long as it writes into ``out``, and writes its holder (host, pid, start time, command) into
the file. A second run into the same folder meets the lock and is refused with a plain message
(:class:`FolderBusy`; the command exits :data:`EXIT_BUSY`). The operating system releases the lock
when its process dies, however it dies, so a lock left by a killed run is no lock at all: the next
run takes it over and says whose it was. The file is emptied, never deleted, when the run ends
(deleting a lock file lets a third run lock a fresh file while a second still holds the old one).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.running.results import ResultsError

LOCK = "results.lock"
#: the exit status of a run refused because another run holds the results folder (EX_TEMPFAIL)
EXIT_BUSY = 75


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a results folder's lock."""

    host: str
    pid: int
    started: str  # ISO 8601, UTC
    command: str = ""

    def words(self) -> str:
        """The holder in plain words, for messages and the app."""
        what = f" ({self.command})" if self.command else ""
        return f"process {self.pid} on {self.host}{what}, since {self.started}"


class FolderBusy(ResultsError):
    """Another run holds the results folder."""

    def __init__(self, out: Path, holder: Holder | None):
        self.out, self.holder = out, holder
        who = holder.words() if holder else "another process (it did not say which)"
        super().__init__(f"{out} is being written by {who}; one run writes a results folder at a "
                         "time: wait for it to finish (or stop it), or choose another --out folder")


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` without waiting; False when another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)


def _read_holder(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        data = json.loads(raw.decode("utf-8"))
        return Holder(str(data["host"]), int(data["pid"]), str(data["started"]),
                      str(data.get("command", "")))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def _open(out: Path) -> int:
    return os.open(out / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)


def holder_of(out: str | os.PathLike) -> Holder | None:
    """The run holding ``out`` now, or None when no run does (for the app's status line)."""
    out = Path(out)
    if not (out / LOCK).exists():
        return None
    try:
        fd = _open(out)
    except OSError:
        return None
    try:
        if _try_lock(fd):
            _unlock(fd)
            return None
        return _read_holder(fd) or Holder("?", 0, "?")
    finally:
        os.close(fd)


def _alive_here(holder: Holder) -> bool:
    """Whether ``holder`` is a live process of this host (False for another host's)."""
    if holder.host != socket.gethostname():
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """The exclusive lock of one results folder, held from :meth:`acquire` to :meth:`release`.

    ``taken_over`` is the holder a killed run left in the file (its lock died with it), else None.
    """

    def __init__(self, out: str | os.PathLike, command: str = ""):
        self.out = Path(out)
        self.command = command or " ".join(Path(sys.argv[0]).name.split()[:1] + sys.argv[1:2])
        self.taken_over: Holder | None = None
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock; :class:`FolderBusy` when another live run holds it."""
        self.out.mkdir(parents=True, exist_ok=True)
        fd = _open(self.out)
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderBusy(self.out, holder)
        previous = _read_holder(fd)
        if previous is not None and previous.pid != os.getpid() and not _alive_here(previous):
            self.taken_over = previous
        me = Holder(socket.gethostname(), os.getpid(),
                    dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), self.command)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(asdict(me)) + "\n").encode("utf-8"))
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the file and give the lock back (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
