"""A real Orthanc (Debian packages orthanc + orthanc-dicomweb) on loopback, for the PACS tests.

Each one runs from a temporary folder (config, storage, index) on free ports and is stopped by
the test; no system service is used. With CI=true a missing Orthanc fails the tests rather than
skipping them (.ci/run installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(*programs: str) -> None:
    """Skip (fail under CI=true) when a program or the DICOMweb plugin is missing."""
    missing = [p for p in programs if shutil.which(p) is None]
    if "Orthanc" in programs and not DICOMWEB_PLUGIN.is_file():
        missing.append(str(DICOMWEB_PLUGIN))
    if missing:
        message = (f"{', '.join(missing)} not installed: apt-get install orthanc "
                   "orthanc-dicomweb dcmtk")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


class Orthanc:
    """One Orthanc process; ``modalities``: {name: (AE, host, port)} it may push to."""

    def __init__(self, folder: Path, modalities: dict[str, tuple[str, str, int]],
                 dicom_port: int | None = None, http_port: int | None = None):
        self.folder = folder
        self.dicom_port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "test", "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"), "HttpPort": self.http_port,
            "DicomPort": self.dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "HttpServerEnabled": True,
            "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": {k: list(v) for k, v in modalities.items()},
            "DicomScuTimeout": 30, "StableAge": 1, "ConcurrentJobs": 2}
        (folder / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
        self.process: subprocess.Popen | None = None

    def start(self) -> Orthanc:
        with open(self.folder / "orthanc.log", "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(["Orthanc", str(self.folder / "orthanc.json")],
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/system", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("Orthanc did not answer within 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def upload(self, path: Path) -> str:
        """Store a file in Orthanc; returns its Orthanc instance id."""
        answer = requests.post(self.url + "/instances", data=path.read_bytes(), timeout=60)
        answer.raise_for_status()
        return answer.json()["ID"]

    def push(self, modality: str, ids: list[str]) -> requests.Response:
        """C-STORE these instances to a modality (Orthanc REST /modalities/{id}/store)."""
        return requests.post(f"{self.url}/modalities/{modality}/store",
                             json={"Resources": ids, "Synchronous": True}, timeout=120)

    def qido_srs(self, study_uid: str) -> list[dict]:
        """QIDO-RS: the SR instances of a study."""
        answer = requests.get(f"{self.url}/dicom-web/studies/{study_uid}/instances",
                              params={"Modality": "SR"}, timeout=30)
        answer.raise_for_status()
        return answer.json() if answer.text.strip() else []

    def file_of(self, instance: str) -> bytes:
        """The file of the instance with this SOP Instance UID (Orthanc's REST download)."""
        found = requests.post(self.url + "/tools/lookup", data=instance, timeout=30).json()
        ident = next(f["ID"] for f in found if f["Type"] == "Instance")
        return requests.get(f"{self.url}/instances/{ident}/file", timeout=30).content
