"""A model that answers NaN for one real X-ray: that image is one error row, the rest are scored
(folder runner, the app's run, Ray's engine actor, the HTTP service for that request only)."""

from __future__ import annotations

import dataclasses
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from runtime.judging.verdict import NO_VALID_ANSWER, score_batch
from runtime.running.results import read_rows
from runtime.running.triage import triage, walk
from tests.runtime.helpers import POISON_HOOK, REPO, PoisonedEngine, model_input_of, runtime_env

POISONED = "NORMAL_poisoned.jpeg"


@pytest.fixture(scope="module")
def xrays(data_dir: Path, tmp_path_factory) -> Path:
    """Ten real 224 px Kermany X-rays; the model breaks on one of them (POISONED)."""
    folder = tmp_path_factory.mktemp("nan-xrays")
    for cls in ("NORMAL", "PNEUMONIA"):
        for path in sorted((data_dir / "kermany_test_224" / cls).glob("*.jpeg"))[:5]:
            shutil.copy(path, folder / f"{cls}_{path.name}")
    first = sorted(folder.glob("NORMAL_*.jpeg"))[0]
    first.rename(folder / POISONED)
    return folder


@pytest.fixture(scope="module")
def poisoned(cpu_bundle: Path, xrays: Path):
    """(the cpu bundle as loaded, the same bundle whose engine answers NaN for POISONED)."""
    from runtime.bundle.load import load_bundle

    bundle = load_bundle(cpu_bundle)
    poison = model_input_of(xrays / POISONED, bundle)
    return bundle, dataclasses.replace(bundle, engine=PoisonedEngine(bundle.engine, poison))


def test_score_batch_reports_the_nan_image_only(xrays, poisoned):
    bundle, broken = poisoned
    files = sorted(xrays.iterdir())
    inputs = np.stack([model_input_of(p, bundle) for p in files])
    from runtime.judging.scope import Scope

    scopes = [Scope(True, "chest X-ray")] * len(files)
    good, bad = score_batch(bundle, inputs, scopes), score_batch(broken, inputs, scopes)
    for path, expected, got in zip(files, good, bad, strict=True):
        if path.name == POISONED:
            assert not got.ok and got.error == NO_VALID_ANSWER
        else:
            assert got.ok and got.probability == expected.probability


def test_triage_writes_one_error_row_and_scores_the_rest(xrays, poisoned, tmp_path):
    bundle, broken = poisoned
    rows_before = None
    for _ in range(2):  # a rerun (resume) does not stumble on it either
        result = triage(xrays, broken, tmp_path / "out", batch=4, workers=1)
        rows = read_rows(result.results_csv)
        rows_before = rows_before or rows
    assert rows == rows_before and len(rows) == len(list(walk(xrays)))
    by_path = {r["path"]: r for r in rows}
    assert by_path[POISONED]["status"] == "error"
    assert by_path[POISONED]["error"] == NO_VALID_ANSWER
    clean = read_rows(triage(xrays, bundle, tmp_path / "clean", batch=4, workers=1).results_csv)
    for row in clean:
        if row["path"] != POISONED:
            assert by_path[row["path"]] == {**row, "latency_ms": by_path[row["path"]]["latency_ms"]}


def test_the_app_run_shows_the_error_row(xrays, cpu_bundle, poisoned, tmp_path, monkeypatch):
    pytest.importorskip("textual")
    import runtime.bundle.load
    from tui.triage.run import RunRequest, TriageFinished, TriageRows, run_triage

    monkeypatch.setattr(runtime.bundle.load, "load_bundle", lambda *a, **k: poisoned[1])
    posted = []
    run_triage(RunRequest(xrays, cpu_bundle, "model.int8.xml", tmp_path / "out", 4, 1),
               posted.append, threading.Event())
    finished = [m for m in posted if isinstance(m, TriageFinished)]
    assert finished and finished[0].error is None
    rows = [row for m in posted if isinstance(m, TriageRows) for row in m.rows]
    assert len(rows) == 10 and sum(r["status"] == "ok" for r in rows) == 9
    assert [r["error"] for r in rows if r["path"] == POISONED] == [NO_VALID_ANSWER]


def test_the_ray_engine_actor_scores_the_rest_of_its_batch(xrays, poisoned, monkeypatch):
    import runtime.bundle.load
    from runtime.running.ray_triage import DecodeSettings, EngineActor, decode_batch, entry_items

    bundle, broken = poisoned
    monkeypatch.setattr(runtime.bundle.load, "load_bundle", lambda *a, **k: broken)
    spec = bundle.preprocessing
    items = entry_items(list(walk(xrays)))
    batch = {key: np.array([item[key] for item in items], dtype=object) for key in items[0]}
    decoded = decode_batch(batch, DecodeSettings(spec, spec.size * 8, bundle.population, 60.0,
                                                 2**30))
    actor = EngineActor(str(bundle.path), bundle.artifact.path, "cpu", bundle.artifact.sha256, 1)
    scored = actor(decoded)
    from runtime.running.ray_triage import row_of

    rows = [row_of({k: v[i] for k, v in scored.items()}) for i in range(len(items))]
    assert [(r.path, r.error) for r in rows if r.status == "error"] == \
        [(POISONED, NO_VALID_ANSWER)]
    assert sum(r.status == "ok" for r in rows) == 9


def test_the_service_fails_that_request_only(xrays, cpu_bundle, poisoned, tmp_path):
    pytest.importorskip("fastapi")
    from runtime.serve.client import post_image, start_service

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(POISON_HOOK)
    np.save(tmp_path / "poison.npy", model_input_of(xrays / POISONED, poisoned[0]))
    env = {**runtime_env(PYTHONPATH=str(hook)), "CXR_POISON": str(tmp_path / "poison.npy")}
    files = sorted(xrays.iterdir())
    with start_service(cpu_bundle, ["--max-wait-ms", "300", "--workers", "2"], env=env,
                       cwd=REPO) as service:
        import http.client

        def one(path: Path):
            conn = http.client.HTTPConnection(service.host, service.port, timeout=60)
            try:
                return path.name, *post_image(conn, path.read_bytes(), None)
            finally:
                conn.close()

        with ThreadPoolExecutor(len(files)) as pool:
            answers = list(pool.map(one, files))
    for name, status, answer in answers:
        if name == POISONED:
            assert status == 422 and answer["error"] == NO_VALID_ANSWER, answer
        else:
            assert status == 200 and answer["status"] == "ok", answer
    assert max(a["batch_size"] for _, s, a in answers if s == 200) > 1  # they did share batches
