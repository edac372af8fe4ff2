"""One writer per results folder: the lock, its holder, a stale lock taken over, the app's word."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from runtime.running.lock import EXIT_BUSY, LOCK, FolderBusy, FolderLock, holder_of
from tests.runtime.helpers import REPO, run_cli, runtime_env

HOLD = "from runtime.running.lock import FolderLock\n" \
       "import sys, time\n" \
       "FolderLock(sys.argv[1], command='holder-test').acquire()\n" \
       "print('held', flush=True)\n" \
       "time.sleep(600)\n"


def _hold_in_another_process(out) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO, env=runtime_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_and_told_who_holds_the_folder(tmp_path):
    with FolderLock(tmp_path, command="first run"):
        assert holder_of(tmp_path).pid == os.getpid()
        with pytest.raises(FolderBusy) as refused:
            FolderLock(tmp_path).acquire()  # another open of the file: refused, even in-process
        message = str(refused.value)
        assert f"process {os.getpid()} on {socket.gethostname()} (first run)" in message
        assert "choose another --out folder" in message
    assert holder_of(tmp_path) is None  # released
    assert (tmp_path / LOCK).read_text() == ""  # emptied, not deleted
    with FolderLock(tmp_path) as again:
        assert again.taken_over is None  # a clean release leaves nothing to take over


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    proc = _hold_in_another_process(tmp_path)
    try:
        with pytest.raises(FolderBusy, match=f"process {proc.pid} .*holder-test"):
            FolderLock(tmp_path).acquire()
        assert holder_of(tmp_path).pid == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert str(proc.pid) in (tmp_path / LOCK).read_text()  # the dead run's record is still there
    assert holder_of(tmp_path) is None
    with FolderLock(tmp_path) as lock:
        assert lock.taken_over is not None and lock.taken_over.pid == proc.pid
        assert holder_of(tmp_path).pid == os.getpid()


def test_the_command_exits_busy_while_another_run_holds_the_folder(data_dir, cpu_bundle,
                                                                    tmp_path):
    out = tmp_path / "out"
    proc = _hold_in_another_process(out)
    try:
        refused = run_cli("triage", str(data_dir / "dicom"), "--bundle", str(cpu_bundle), "--out",
                          str(out), "--quiet")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert refused.returncode == EXIT_BUSY, refused.stderr
    assert f"is being written by process {proc.pid}" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (out / "results.csv").exists()
    resumed = run_cli("triage", str(data_dir / "dicom"), "--bundle", str(cpu_bundle), "--out",
                      str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert f"Took over the results folder from a run that had stopped: process {proc.pid}" \
        in resumed.stdout


def test_the_app_says_who_holds_the_folder(data_dir, cpu_bundle, tmp_path):
    pytest.importorskip("textual")
    from tui.triage.run import RunRequest, TriageFinished, run_triage

    out = tmp_path / "out"
    posted = []
    request = RunRequest(data_dir / "dicom", cpu_bundle, "model.int8.xml", out, 4, 1)
    with FolderLock(out, command="python -m runtime triage"):
        run_triage(request, posted.append, threading.Event())
    finished = [m for m in posted if isinstance(m, TriageFinished)]
    assert len(finished) == 1
    assert f"in use by process {os.getpid()} on {socket.gethostname()} (python -m runtime " \
           "triage)" in finished[0].error
