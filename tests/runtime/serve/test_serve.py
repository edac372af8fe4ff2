"""``python -m runtime serve`` over real HTTP on the loopback address, with real X-rays.

One service process (a real uvicorn server, started the way users start it) serves every test of
the module; its answers are compared with the rows ``python -m runtime triage`` writes for the
same files with the same bundle.
"""

from __future__ import annotations

import csv
import http.client
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import pytest

from runtime.running.results import one_line
from runtime.serve.auth import AuthError, authorized, check_host, is_loopback, load_token
from runtime.serve.client import get_json, post_image, start_service
from tests.runtime.helpers import REPO, run_cli, runtime_env

pytest.importorskip("fastapi")

TOKEN = "test-token-" + "x" * 24
UPLOAD_LIMIT_MIB = 4
CHEST_DICOM = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"  # CR, CHEST, PA
#: a multipart file name that must never reach the log (it could hold a patient's name)
SECRET_NAME = "Doe_Jane_19800101.jpeg"


@pytest.fixture(scope="module")
def xrays(data_dir: Path, tmp_path_factory) -> Path:
    """A folder of real X-rays in every upload form: JPEGs of both classes, an adult's JPEG (out
    of scope by the population check), a PNG written from a real X-ray, a chest DICOM, and a JPEG
    cut short (an error row)."""
    folder = tmp_path_factory.mktemp("serve-xrays")
    samples = data_dir / "cxr_samples"
    for cls in ("NORMAL", "PNEUMONIA"):
        for path in sorted((samples / cls).glob("*.jpeg"))[:2]:
            shutil.copy(path, folder / f"{cls}_{path.name}")
    source = sorted((samples / "PNEUMONIA").glob("*.jpeg"))[2]
    cv2.imwrite(str(folder / "xray.png"), cv2.imread(str(source), cv2.IMREAD_GRAYSCALE))
    shutil.copy(data_dir / "dicom" / CHEST_DICOM, folder / "chest.dcm")
    shutil.copy(min((data_dir / "adult_cxr" / "nih").glob("*.jpeg")), folder / "adult.jpeg")
    whole = sorted((samples / "NORMAL").glob("*.jpeg"))[2].read_bytes()
    (folder / "cut_short.jpeg").write_bytes(whole[: len(whole) // 2])
    return folder


@pytest.fixture(scope="module")
def triage_rows(xrays: Path, cpu_bundle: Path, tmp_path_factory) -> dict[str, dict[str, str]]:
    out = tmp_path_factory.mktemp("serve-triage") / "results"
    done = run_cli("triage", str(xrays), "--bundle", str(cpu_bundle), "--out", str(out),
                   "--quiet")
    assert done.returncode == 0, done.stderr
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def service(cpu_bundle: Path):
    """The service with a token, a 100 ms batching wait (so concurrent requests meet) and a
    small upload limit."""
    with start_service(cpu_bundle, ["--max-wait-ms", "100", "--max-upload-mib",
                                    str(UPLOAD_LIMIT_MIB), "--workers", "2"],
                       env={**runtime_env(), "CXR_API_TOKEN": TOKEN}, cwd=REPO) as running:
        yield running


def _conn(service) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(service.host, service.port, timeout=60)


def test_answers_equal_the_triage_rows_for_the_same_files(service, xrays, triage_rows):
    conn = _conn(service)
    for index, path in enumerate(sorted(xrays.iterdir())):
        row = triage_rows[path.name]
        as_form = index % 2 == 1  # both upload forms, over one kept-alive connection
        status, answer = post_image(conn, path.read_bytes(), TOKEN,
                                    filename=path.name if as_form else None)
        if row["status"] == "error":
            assert status == 422, answer
            assert one_line(answer["error"]) == row["error"]
            continue
        assert status == 200, answer
        assert abs(answer["probability"] - float(row["probability"])) <= 1e-6, path.name
        assert answer["prediction"] == row["prediction"]
        assert answer["flagged"] == bool(int(row["flagged"]))
        assert (answer["scope"], answer["scope_reason"]) == (row["scope"], row["scope_reason"])
        assert answer["bundle"]["artifact"] and len(answer["bundle"]["sha256"]) == 64
        assert answer["threshold"] == pytest.approx(get_json(
            service.host, service.port, "/v1/model", TOKEN)[1]["threshold"])
    assert {r["status"] for r in triage_rows.values()} == {"ok", "error"}
    assert "looks like an adult" in triage_rows["adult.jpeg"]["scope_reason"]  # the check
    assert {p.suffix for p in xrays.iterdir()} >= {".jpeg", ".png", ".dcm"}


def test_every_v1_call_needs_the_token(service, xrays):
    image = next(xrays.glob("NORMAL_*")).read_bytes()
    conn = _conn(service)
    for token in (None, "wrong-token-" + "y" * 24, TOKEN + "x"):
        status, answer = post_image(conn, image, token)
        assert status == 401 and "token" in answer["error"]
        assert get_json(service.host, service.port, "/v1/model", token)[0] == 401
    conn.request("POST", "/v1/triage", body=image, headers={"Authorization": f"Basic {TOKEN}"})
    assert conn.getresponse().status == 401
    conn.close()
    assert get_json(service.host, service.port, "/health") == (200, {"status": "ok"})
    status, answer = get_json(service.host, service.port, "/v2/nothing", TOKEN)
    assert status == 404 and answer["status"] == "error"
    status, model = get_json(service.host, service.port, "/v1/model", TOKEN)
    assert status == 200 and model["device_check"]["passed"] is True
    assert model["service"]["authentication"] == "bearer token"
    assert model["site_calibration"] is None and model["threshold"] == model["build_threshold"]


def test_an_upload_over_the_limit_is_refused(service):
    limit = UPLOAD_LIMIT_MIB * 2**20
    conn = _conn(service)  # declared too large: refused before the body is read
    conn.putrequest("POST", "/v1/triage")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Length", str(limit + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and b"MiB limit" in response.read()
    conn.close()
    conn = _conn(service)  # chunked, no length: refused once the limit is passed
    conn.request("POST", "/v1/triage", body=iter([b"\0" * 2**20] * (UPLOAD_LIMIT_MIB + 1)),
                 headers={"Authorization": f"Bearer {TOKEN}"}, encode_chunked=True)
    assert conn.getresponse().status == 413


def test_bad_input_gets_a_plain_4xx(service, xrays):
    conn = _conn(service)
    status, answer = post_image(conn, b"patient list\nname,dob\n", TOKEN)
    assert status == 422 and answer["error"].startswith("not an image")
    status, answer = post_image(conn, b"", TOKEN)
    assert status == 400 and "no image" in answer["error"]
    conn.request("POST", "/v1/triage", body=b"--x\r\nContent-Disposition: form-data; "
                 b"name=\"note\"\r\n\r\nhello\r\n--x--\r\n",
                 headers={"Authorization": f"Bearer {TOKEN}",
                          "Content-Type": "multipart/form-data; boundary=x"})
    response = conn.getresponse()
    assert response.status == 400 and b"no file in the multipart form" in response.read()
    status, answer = post_image(conn, next(xrays.glob("PNEUMONIA_*")).read_bytes(), TOKEN)
    assert status == 200  # and the same connection still works


def test_concurrent_requests_share_one_engine_call(service, xrays):
    images = [p.read_bytes() for p in sorted(xrays.glob("*MONIA_*.jpeg")) +
              sorted(xrays.glob("NORMAL_*.jpeg"))] * 2  # 8 real JPEGs

    def one(data: bytes):
        conn = _conn(service)
        try:
            return post_image(conn, data, TOKEN)
        finally:
            conn.close()

    with ThreadPoolExecutor(len(images)) as pool:
        answers = list(pool.map(one, images))
    assert all(status == 200 for status, _ in answers), answers
    assert max(answer["batch_size"] for _, answer in answers) > 1
    stats = get_json(service.host, service.port, "/v1/model", TOKEN)[1]["stats"]
    assert stats["largest_batch"] > 1 and stats["batches"] < stats["images"]


def test_the_log_holds_no_file_names_or_patient_fields(service, xrays):
    import pydicom

    patient = str(pydicom.dcmread(xrays / "chest.dcm").PatientName)
    conn = _conn(service)
    assert post_image(conn, (xrays / "chest.dcm").read_bytes(), TOKEN, filename=SECRET_NAME)[0] \
        == 200
    assert post_image(conn, (xrays / "chest.dcm").read_bytes(), TOKEN,
                      media_type="application/dicom")[0] == 200
    log = service.log()
    assert "POST /v1/triage 200" in log and "POST /v1/triage 401" in log
    assert patient and patient not in log
    assert SECRET_NAME not in log and "Doe_Jane" not in log


def test_no_token_means_loopback_only(cpu_bundle, tmp_path):
    env = {k: v for k, v in runtime_env().items() if k != "CXR_API_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "runtime", "serve", "--bundle", str(cpu_bundle),
                           "--host", "0.0.0.0"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "without an API token" in done.stderr
    short = tmp_path / "token"
    short.write_text("short\n")
    done = run_cli("serve", "--bundle", str(cpu_bundle), "--token-file", str(short))
    assert done.returncode == 2 and "at least 16 characters" in done.stderr


def test_token_and_host_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert not is_loopback("xray-server.example")
    check_host("127.0.0.1", None)
    check_host("0.0.0.0", TOKEN)
    with pytest.raises(AuthError):
        check_host("::", None)
    assert load_token(environ={}) is None
    assert load_token(environ={"CXR_API_TOKEN": f" {TOKEN}\n"}) == TOKEN
    assert authorized(f"Bearer {TOKEN}", TOKEN) and authorized(f"bearer {TOKEN}", TOKEN)
    assert not authorized(None, TOKEN) and not authorized(f"Bearer {TOKEN[:-1]}", TOKEN)
    assert authorized(None, None)


def test_the_runtime_imports_without_fastapi():
    code = ("import sys, runtime, runtime.__main__, runtime.serve, runtime.serve.auth, "
            "runtime.serve.client; assert 'fastapi' not in sys.modules and "
            "'uvicorn' not in sys.modules, 'imported the web stack'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=runtime_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
