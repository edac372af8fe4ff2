"""The kit's listener as a subprocess, and the DICOM files the PACS tests send."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from runtime.running.results import read_rows

REPO = Path(__file__).resolve().parents[3]


def wait_for(condition: Callable[[], bool], seconds: float, what: str,
             detail: Callable[[], str] = str) -> None:
    """Poll ``condition``; on time-out fail with ``what`` and ``detail()`` (e.g. a log's tail)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}\n{detail()}")


class Listener:
    """``python -m runtime listen`` on loopback; its console goes to ``out.log``."""

    def __init__(self, bundle: Path, out: Path, port: int, *options: str):
        self.out, self.port = out, port
        self.log = out.with_name(out.name + ".log")
        self.command = [sys.executable, "-m", "runtime", "listen", "--bundle", str(bundle),
                        "--out", str(out), "--host", "127.0.0.1", "--port", str(port),
                        "--workers", "1", *options]
        self.process: subprocess.Popen | None = None

    def start(self) -> Listener:
        with open(self.log, "a", encoding="utf-8") as log:
            log.write("--- start\n")
        with open(self.log, "a", encoding="utf-8") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(self.command, cwd=REPO, stdout=log,
                                            stderr=subprocess.STDOUT, env=dict(os.environ))
        starts = self.text().count("--- start")

        def up() -> bool:
            assert self.process.poll() is None, self.text()[-3000:]
            return self.text().split("--- start")[starts].count("listening as") == 1
        wait_for(up, 120, "the listener to start", self.tail)
        return self

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8")

    def tail(self) -> str:
        return "listener log: ..." + self.text()[-3000:]

    def stop(self) -> int:
        if self.process is None:
            return 0
        self.process.terminate()
        code = self.process.wait(timeout=120)
        self.process = None
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        self.process = None

    def rows(self) -> list[dict[str, str]]:
        return read_rows(self.out / "results.csv")

    def status(self) -> str:
        return subprocess.run([sys.executable, "-m", "runtime", "listen", "--status",
                               str(self.out)], cwd=REPO, capture_output=True, text=True,
                              timeout=120, check=True).stdout


def chest_dx(data_dir: Path) -> Path:
    """The shared DX chest X-ray (implicit VR little endian, 1024 x 1024)."""
    return data_dir / "dicom" / "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"


def copies(source: Path, folder: Path, n: int, sop_class: str = "") -> list[Path]:
    """``n`` copies of a real X-ray, each a new instance (new SOP Instance UID) of one study."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(source)
    if sop_class:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    paths = []
    for i in range(n):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        paths.append(folder / f"{i:04d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def send_with_pynetdicom(port: int, datasets: list, calling_ae: str = "STORESCU",
                         on_stored: Callable[[int], None] | None = None) -> list[int | None]:
    """C-STORE ``datasets`` over one association; the status of each (None: no answer).
    ``on_stored(i)`` is called after each acknowledged instance."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [str(ds.file_meta.TransferSyntaxUID)
                                             for ds in datasets[:1]])
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRKIT")
    assert assoc.is_established
    answers: list[int | None] = []
    try:
        for i, ds in enumerate(datasets):
            try:
                status = assoc.send_c_store(ds)
            except (RuntimeError, ValueError):
                status = None
            code = getattr(status, "Status", None)
            answers.append(code)
            if code == 0 and on_stored:
                on_stored(i)
            if code is None and not assoc.is_established:
                answers.extend([None] * (len(datasets) - i - 1))
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return answers
