"""Resume that notices change: a replaced file is scored again (a new row marked as a re-read),
``--retry-errors`` retries error rows, the time-out clock starts when decoding starts, and a
results.csv written before the file-fact columns still resumes."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import pytest

import runtime.imaging.decode as decode_module
from runtime.imaging.limits import MemoryBudget
from runtime.running.results import (
    COLUMNS,
    COLUMNS_BEFORE_FILE_FACTS,
    ResultsWriter,
    Row,
    read_rows,
)
from runtime.running.triage import DEFAULT_OVERSAMPLE, Entry, load_one, triage


@pytest.fixture()
def xrays(data_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "xrays"
    folder.mkdir()
    for cls in ("NORMAL", "PNEUMONIA"):
        for path in sorted((data_dir / "kermany_test_224" / cls).glob("*.jpeg"))[:3]:
            shutil.copy(path, folder / f"{cls}_{path.name}")
    return folder


def _slow_for(monkeypatch, names: set[bytes] | None, seconds: float) -> None:
    """Make the decoder take ``seconds`` longer on the files whose bytes are in ``names``
    (None: every file)."""
    real = decode_module.decode_probed

    def slow(data, probe):
        if names is None or data in names:
            time.sleep(seconds)
        return real(data, probe)

    monkeypatch.setattr(decode_module, "decode_probed", slow)


def test_a_replaced_file_is_scored_again_with_a_new_row(xrays, loaded_bundle, data_dir,
                                                        tmp_path):
    out = tmp_path / "out"
    first = {r["path"]: r for r in read_rows(triage(xrays, loaded_bundle, out, workers=1)
                                              .results_csv)}
    name = sorted(first)[0]
    assert first[name]["sha256"] == hashlib.sha256((xrays / name).read_bytes()).hexdigest()
    assert first[name]["file_bytes"] == str((xrays / name).stat().st_size)
    replacement = sorted((data_dir / "kermany_test_224" / "PNEUMONIA").glob("*.jpeg"))[-1]
    shutil.copy(replacement, xrays / name)  # same name, another X-ray
    result = triage(xrays, loaded_bundle, out, workers=1)
    assert (result.skipped, result.processed) == (len(first) - 1, 1)
    history = read_rows(result.results_csv, history=True)
    assert len(history) == len(first) + 1 and history[-1]["path"] == name
    now = read_rows(result.results_csv)
    assert len(now) == len(first) and {r["path"] for r in now} == set(first)
    new = {r["path"]: r for r in now}[name]
    assert new["reread"] == "changed" and new["sha256"] == hashlib.sha256(
        replacement.read_bytes()).hexdigest()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(replacement, fresh / name)
    alone = read_rows(triage(fresh, loaded_bundle, tmp_path / "out-fresh", workers=1).results_csv)
    assert new["probability"] == alone[0]["probability"] != first[name]["probability"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["total"] == len(first)  # the current rows, not the history
    untouched = triage(xrays, loaded_bundle, out, workers=1)
    assert untouched.processed == 0  # nothing changed since: nothing read again


def test_retry_errors_retries_a_time_out(xrays, loaded_bundle, tmp_path, monkeypatch):
    out = tmp_path / "out"
    stuck = sorted(xrays.iterdir())[0]
    _slow_for(monkeypatch, {stuck.read_bytes()}, 3.0)
    triage(xrays, loaded_bundle, out, workers=2, decode_timeout=0.5)
    row = {r["path"]: r for r in read_rows(out / "results.csv")}[stuck.name]
    assert row["status"] == "error" and "took longer than" in row["error"]
    assert "--retry-errors" in row["error"] and "pathological" not in row["error"]
    monkeypatch.undo()
    assert triage(xrays, loaded_bundle, out, workers=1).processed == 0  # kept without the flag
    retried = triage(xrays, loaded_bundle, out, workers=1, retry_errors=True)
    assert retried.processed == 1
    row = {r["path"]: r for r in read_rows(out / "results.csv")}[stuck.name]
    assert (row["status"], row["reread"]) == ("ok", "retry")
    assert len(read_rows(out / "results.csv", history=True)) == len(list(xrays.iterdir())) + 1


def test_the_time_out_clock_starts_when_decoding_starts(xrays, loaded_bundle, tmp_path,
                                                       monkeypatch):
    """Two files, a decode memory budget that holds one at a time, each decode 1 s, a 1.6 s
    limit: the second file waits ~1 s for memory, then decodes in 1 s; it is not a time-out."""
    folder = tmp_path / "two"
    folder.mkdir()
    for path in sorted(xrays.iterdir())[:2]:
        shutil.copy(path, folder / path.name)
    spec = loaded_bundle.preprocessing
    probe = MemoryBudget(2**30)
    for path in folder.iterdir():
        load_one(Entry(path, path.name), spec, spec.size * DEFAULT_OVERSAMPLE, False, probe)
    _slow_for(monkeypatch, None, 1.0)
    result = triage(folder, loaded_bundle, tmp_path / "out", workers=2, decode_timeout=1.6,
                    memory_budget=int(probe.peak * 1.5))
    rows = read_rows(result.results_csv)
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["error"] for r in rows]


def test_a_results_file_from_before_the_file_facts_resumes(xrays, loaded_bundle, tmp_path):
    out = tmp_path / "out"
    triage(xrays, loaded_bundle, out, workers=1)
    rows = read_rows(out / "results.csv")
    old = io.StringIO()
    csv.writer(old, lineterminator="\n").writerows(
        [COLUMNS_BEFORE_FILE_FACTS, *([r[c] for c in COLUMNS_BEFORE_FILE_FACTS] for r in rows[:4])])
    (out / "results.csv").write_text(old.getvalue() + "half,a line")  # an older runner's, killed
    kept = [r["path"] for r in read_rows(out / "results.csv")]
    assert kept and all(r["file_bytes"] == "" for r in read_rows(out / "results.csv"))
    result = triage(xrays, loaded_bundle, out, workers=1)
    assert (result.skipped, result.processed) == (len(kept), len(rows) - len(kept))
    assert (out / "results.csv").read_text().splitlines()[0] == \
        ",".join([*COLUMNS, "p_NORMAL", "p_PNEUMONIA"])
    after = read_rows(out / "results.csv", history=True)
    assert [r["path"] for r in after[:len(kept)]] == kept and len(after) == len(rows)


def test_a_writer_never_writes_a_file_twice(tmp_path):
    with ResultsWriter(tmp_path) as writer:
        assert writer.write(Row("a.jpg", "error", error="x"))
        assert not writer.write(Row("a.jpg", "error", error="x", reread="retry"))  # same run
    with ResultsWriter(tmp_path) as writer:
        assert not writer.write(Row("a.jpg", "ok", "NORMAL", 0.1, False))  # not a re-read
        assert writer.write(Row("a.jpg", "ok", "NORMAL", 0.1, False, reread="retry"))
    assert [r["status"] for r in read_rows(tmp_path / "results.csv", history=True)] == \
        ["error", "ok"]
    assert os.path.getsize(tmp_path / "results.csv") > 0
