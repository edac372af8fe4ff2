"""review.csv: decisions appended and kept, undo as a correction, resume after a kill."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from runtime.bundle.hashing import sha256_file
from runtime.clinic.review import COLUMNS, REVIEW, ReviewEntry, ReviewLog
from runtime.running.results import ResultsError


@pytest.fixture()
def xrays(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "kermany_test_224" / "PNEUMONIA").glob("*.jpeg"))[:3]


def entry(image: Path, action: str, note: str = "") -> ReviewEntry:
    return ReviewEntry(image.name, sha256_file(image), action, note=note, reviewer="AB",
                       bundle="dist/cpu", artifact="model.int8.onnx", probability="0.910000",
                       threshold="0.5")


def test_decisions_persist_and_resume(tmp_path: Path, xrays: list[Path]):
    log = ReviewLog(tmp_path)
    log.append(entry(xrays[0], "confirmed"))
    log.append(entry(xrays[1], "overruled", note="old scar, no consolidation"))
    log.append(entry(xrays[1], "note", note="ask for a lateral view"))
    reopened = ReviewLog(tmp_path).cases()
    assert reopened[xrays[0].name].decision == "confirmed"
    assert reopened[xrays[1].name].decision == "overruled"
    assert reopened[xrays[1].name].notes == ["ask for a lateral view"]
    assert xrays[2].name not in reopened
    with open(tmp_path / REVIEW, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS and [r["seq"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["image_sha256"] == sha256_file(xrays[0]) and rows[0]["time"]


def test_undo_appends_a_correction(tmp_path: Path, xrays: list[Path]):
    log = ReviewLog(tmp_path)
    log.append(entry(xrays[0], "unsure"))
    log.append(entry(xrays[0], "confirmed"))
    undo = log.undo("AB")
    assert undo is not None and undo.undoes == 2
    assert ReviewLog(tmp_path).cases()[xrays[0].name].decision == "unsure"
    assert log.undo("AB").undoes == 1 and log.undo("AB") is None
    assert xrays[0].name not in ReviewLog(tmp_path).cases()
    assert len((tmp_path / REVIEW).read_text().splitlines()) == 1 + 4  # nothing deleted


def test_a_line_cut_by_a_kill_is_dropped(tmp_path: Path, xrays: list[Path]):
    log = ReviewLog(tmp_path)
    log.append(entry(xrays[0], "confirmed"))
    with open(tmp_path / REVIEW, "a", encoding="utf-8") as handle:
        handle.write("2,half a row")
    resumed = ReviewLog(tmp_path)
    assert [e.seq for e in resumed.entries] == [1]
    assert resumed.append(entry(xrays[1], "confirmed")).seq == 2


def test_foreign_file_refused(tmp_path: Path):
    (tmp_path / REVIEW).write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ResultsError, match="not a review file"):
        ReviewLog(tmp_path)
