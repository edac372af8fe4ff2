"""Faults on loopback, bounded: the listener killed with SIGKILL mid-stream and restarted (every
acknowledged instance triaged exactly once, one SR each), and the SR destination down, then up
(every SR delivered once), and TLS."""

from __future__ import annotations

import collections
import ssl
import subprocess
import threading
from pathlib import Path

import pydicom
import pytest

from tests.runtime.pacs.kit import (
    Listener,
    chest_dx,
    copies,
    send_with_pynetdicom,
    wait_for,
)
from tests.runtime.pacs.orthanc import Orthanc, free_port, require

#: instances sent in the kill test; the kill comes after KILL_AFTER are acknowledged
SENT, KILL_AFTER = 24, 10


def _datasets(data_dir: Path, folder: Path, n: int) -> list:
    return [pydicom.dcmread(p) for p in copies(chest_dx(data_dir), folder, n)]


def test_sigkill_mid_stream_then_restart_triages_every_acknowledged_instance_once(
        cpu_bundle, data_dir, tmp_path):
    require("storescu")
    port = free_port()
    listener = Listener(cpu_bundle, tmp_path / "kit", port).start()
    datasets = _datasets(data_dir, tmp_path / "in", SENT)
    acknowledged: list[int] = []

    def stored(i: int) -> None:
        acknowledged.append(i)
        if len(acknowledged) == KILL_AFTER:
            listener.kill()

    answers = send_with_pynetdicom(port, datasets, on_stored=stored)
    assert listener.process is None and KILL_AFTER <= len(acknowledged) < SENT, answers
    listener.start()  # resumes: what was spooled but not triaged is triaged now
    rest = [ds for i, ds in enumerate(datasets) if i not in acknowledged]
    answers = send_with_pynetdicom(port, rest)
    assert all(code == 0 for code in answers), (answers, listener.tail())
    names = {str(ds.SOPInstanceUID) + ".dcm" for ds in datasets}
    wait_for(lambda: {r["path"] for r in listener.rows()} >= names, 120, "every instance triaged",
             listener.tail)
    assert listener.stop() == 0, listener.tail()
    paths = collections.Counter(r["path"] for r in listener.rows())
    assert set(paths) == names and set(paths.values()) == {1}, paths.most_common(3)
    assert [r for r in listener.rows() if r["status"] != "ok"] == []
    reports = sorted(p.name for p in (tmp_path / "kit" / "sr").glob("*.sr.dcm"))
    assert reports == sorted(n + ".sr.dcm" for n in names)


def test_destination_down_then_up_delivers_every_sr_once(cpu_bundle, data_dir, tmp_path):
    require("Orthanc")
    http_port, port = free_port(), free_port()
    listener = Listener(cpu_bundle, tmp_path / "kit", port, "--stow",
                        f"http://127.0.0.1:{http_port}/dicom-web", "--retry-max-s", "1").start()
    datasets = _datasets(data_dir, tmp_path / "in", 3)
    orthanc = Orthanc(tmp_path / "orthanc", {}, http_port=http_port)
    try:
        assert send_with_pynetdicom(port, datasets) == [0, 0, 0]
        wait_for(lambda: "3 waiting; last failure" in listener.status(), 90,
                 "the SRs waiting with the failure")
        assert "connection failed" in listener.status()
        orthanc.start()
        wait_for(lambda: "3 sent, 0 waiting" in listener.status(), 90, "the SRs delivered")
        study = str(datasets[0].StudyInstanceUID)
        assert len(orthanc.qido_srs(study)) == 3
        sent = [line for line in listener.text().splitlines() if line.startswith("sent ")]
        assert len(sent) == len(set(sent)) == 3
    finally:
        listener.stop()
        orthanc.stop()


def test_tls_listener_answers_only_over_tls(cpu_bundle, tmp_path):
    require("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    port = free_port()
    listener = Listener(cpu_bundle, tmp_path / "kit", port, "--tls-cert", str(cert),
                        "--tls-key", str(key)).start()
    from pynetdicom import AE

    try:
        ae = AE(ae_title="TLSCLIENT")
        ae.add_requested_context("1.2.840.10008.1.1")
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        client.check_hostname = False
        assoc = ae.associate("127.0.0.1", port, ae_title="CXRKIT", tls_args=(client, None))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        ae.acse_timeout = ae.network_timeout = 5
        plain = ae.associate("127.0.0.1", port, ae_title="CXRKIT")
        assert not plain.is_established
    finally:
        listener.stop()


@pytest.fixture(autouse=True)
def _no_threads_left():
    before = threading.active_count()
    yield
    wait_for(lambda: threading.active_count() <= before + 1, 30, "the test's threads to end")
