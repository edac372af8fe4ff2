"""review.csv: decisions appended and kept, undo as a correction, resume after a kill, many
reviewers on one log (ids, undo of one's own row, second opinions, two processes)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.bundle.hashing import sha256_file
from runtime.clinic.review import COLUMNS, COLUMNS_BEFORE_ID, REVIEW, ReviewEntry, ReviewLog
from runtime.running.results import ResultsError
from tests.runtime.helpers import REPO, runtime_env


@pytest.fixture()
def xrays(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "kermany_test_224" / "PNEUMONIA").glob("*.jpeg"))[:3]


def entry(image: Path, action: str, note: str = "", reviewer: str = "AB") -> ReviewEntry:
    return ReviewEntry(image.name, sha256_file(image), action, note=note, reviewer=reviewer,
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
    assert undo is not None and undo.undoes == log.entries[1].id
    assert ReviewLog(tmp_path).cases()[xrays[0].name].decision == "unsure"
    assert log.undo("AB").undoes == log.entries[0].id and log.undo("AB") is None
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


def test_two_reviewers_never_undo_each_other(tmp_path: Path, xrays: list[Path]):
    """The reported loss: A confirms a case, B (opened before) decides another and undoes; B's
    undo took back A's decision too, as both rows were numbered 1 from their own copies."""
    a, b = ReviewLog(tmp_path), ReviewLog(tmp_path)
    a.append(entry(xrays[0], "confirmed", reviewer="A"))
    b.append(entry(xrays[1], "overruled", reviewer="B"))
    undo = b.undo("B")
    assert undo.undoes == b.entries[1].id and b.entries[1].reviewer == "B"
    rows = ReviewLog(tmp_path).entries
    assert [e.seq for e in rows] == [1, 2, 3] and len({e.id for e in rows}) == 3
    cases = ReviewLog(tmp_path).cases()
    assert cases[xrays[0].name].decision == "confirmed" and cases[xrays[0].name].reviewer == "A"
    assert xrays[1].name not in cases
    assert a.undo("A").undoes == rows[0].id  # A takes back A's own, never B's
    with pytest.raises(ValueError, match="already taken back"):
        b.append(ReviewEntry(xrays[0].name, "", "undo", reviewer="B", undoes=rows[0].id))


def test_a_later_reviewer_is_a_second_opinion(tmp_path: Path, xrays: list[Path]):
    a, b = ReviewLog(tmp_path), ReviewLog(tmp_path)
    a.append(entry(xrays[0], "confirmed", reviewer="A"))
    assert b.cases()[xrays[0].name].decision == "confirmed"  # B sees A's decision
    b.append(entry(xrays[0], "overruled", reviewer="B"))
    a.append(entry(xrays[0], "unsure", reviewer="A"))  # A changes A's own mind
    case = ReviewLog(tmp_path).cases()[xrays[0].name]
    assert (case.decision, case.reviewer) == ("unsure", "A")
    assert [(o.reviewer, o.decision) for o in case.opinions] == [("A", "unsure"),
                                                                  ("B", "overruled")]
    assert case.disagreement and [o.reviewer for o in case.second_opinions] == ["B"]


def test_a_log_from_before_row_ids_is_read_and_kept(tmp_path: Path, xrays: list[Path]):
    old = [",".join(COLUMNS_BEFORE_ID),
           f"1,{xrays[0].name},ab,confirmed,,AB,2026-01-01T00:00:00+00:00,d,m,0.9,0.5,",
           f"2,{xrays[1].name},cd,unsure,,AB,2026-01-01T00:01:00+00:00,d,m,0.8,0.5,",
           f"3,{xrays[1].name},cd,undo,,AB,2026-01-01T00:02:00+00:00,d,m,0.8,0.5,2"]
    (tmp_path / REVIEW).write_text("\n".join(old) + "\n")
    log = ReviewLog(tmp_path)
    assert set(log.cases()) == {xrays[0].name}  # the old undo (by seq) still takes back row 2
    log.append(entry(xrays[2], "overruled"))
    with open(tmp_path / REVIEW, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS and [r["id"] for r in rows[:3]] == ["1", "2", "3"]
    assert [r["seq"] for r in rows] == ["1", "2", "3", "4"] and rows[2]["undoes"] == "2"
    assert set(ReviewLog(tmp_path).cases()) == {xrays[0].name, xrays[2].name}


REVIEWER = """
import sys
from runtime.clinic.review import ReviewEntry, ReviewLog
folder, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = ReviewLog(folder)
for i in range(count):
    log.append(ReviewEntry(f"case-{i}.jpeg", "", "confirmed" if i % 2 else "overruled",
                           reviewer=name))
    if i % 10 == 9:
        log.undo(name)
"""


def test_two_reviewers_in_two_processes_keep_every_decision(tmp_path: Path):
    count = 150
    procs = [subprocess.Popen([sys.executable, "-c", REVIEWER, str(tmp_path), name, str(count)],
                              cwd=REPO, env=runtime_env(), stderr=subprocess.PIPE, text=True)
             for name in ("A", "B")]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    log = ReviewLog(tmp_path)
    assert len(log.entries) == 2 * (count + count // 10)
    assert sorted(e.seq for e in log.entries) == list(range(1, len(log.entries) + 1))
    assert len({e.id for e in log.entries}) == len(log.entries)
    by_id = {e.id: e for e in log.entries}
    for undo in (e for e in log.entries if e.action == "undo"):  # each took back its own
        assert by_id[undo.undoes].reviewer == undo.reviewer
    cases = log.cases()
    for i in range(count):
        case = cases.get(f"case-{i}.jpeg")
        kept = {o.reviewer for o in case.opinions} if case else set()
        assert kept == (set() if i % 10 == 9 else {"A", "B"})  # both kept, neither over the other
