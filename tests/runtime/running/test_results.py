"""results.csv mechanics: one line per row, cut-off last line repaired, no duplicates."""

from __future__ import annotations

import os

import pytest

from runtime.running.results import (
    COLUMNS,
    ResultsError,
    ResultsWriter,
    Row,
    display_path,
    read_rows,
    summarize_rows,
)


def test_display_path_is_one_printable_line():
    assert display_path(os.fsdecode(b"caf\xe9/x.jpg")) == "caf\\xe9/x.jpg"
    assert display_path("a\nb.png") == "a\\nb.png"
    assert display_path("Ünïcode, comma.jpg") == "Ünïcode, comma.jpg"


def test_resume_repairs_a_cut_line_and_never_duplicates(tmp_path):
    with ResultsWriter(tmp_path) as writer:
        writer.write(Row("a.jpg", "ok", "NORMAL", 0.1, False, 3.0, scope="in", scope_reason="ok"))
        writer.write(Row("b, with comma.jpg", "error", error="file is empty (0 bytes)"))
    with open(tmp_path / "results.csv", "a", encoding="utf-8") as handle:
        handle.write("c.jpg,ok,PNEU")  # what a kill in the middle of a write leaves
    writer = ResultsWriter(tmp_path)
    assert writer.done == {"a.jpg", "b, with comma.jpg"} and writer.resumed == 2
    writer.write(Row("a.jpg", "ok", "NORMAL", 0.1, False, 3.0))  # already done: ignored
    writer.write(Row("c.jpg", "ok", "OUT-OF-SCOPE", 0.9, True, 3.0, scope="out",
                     scope_reason="read without the model: a colour picture"))
    writer.close()
    rows = read_rows(tmp_path / "results.csv")
    assert [r["path"] for r in rows] == ["a.jpg", "b, with comma.jpg", "c.jpg"]
    assert (tmp_path / "results.csv").read_text().count("\n") == 4
    assert rows[2]["scope_reason"] == "read without the model: a colour picture"
    assert summarize_rows(rows) == {"total": 3, "ok": 2, "errors": 1, "flagged": 1,
                                    "in_scope": 1, "out_of_scope": 1,
                                    "by_prediction": {"NORMAL": 1, "OUT-OF-SCOPE": 1}}


def test_foreign_csv_is_refused(tmp_path):
    (tmp_path / "results.csv").write_text("name,score\nx,1\n")
    with pytest.raises(ResultsError, match="not a triage results file"):
        ResultsWriter(tmp_path)


def test_header(tmp_path):
    ResultsWriter(tmp_path).close()
    assert (tmp_path / "results.csv").read_text().strip().split(",") == list(COLUMNS)


def test_one_probability_column_per_label_and_older_files_upgraded(tmp_path):
    labels = ("NORMAL", "BACTERIAL", "VIRAL")
    with ResultsWriter(tmp_path) as writer:  # a file written before the label columns
        writer.write(Row("a.png", "ok", "NORMAL", 0.1, False))
    with ResultsWriter(tmp_path, labels) as writer:
        writer.write(Row("b.png", "ok", "VIRAL", 0.7, True,
                         probabilities={"NORMAL": 0.1, "BACTERIAL": 0.2, "VIRAL": 0.7}))
        writer.write(Row("c.png", "error", error="not an image"))
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert header == [*COLUMNS, "p_NORMAL", "p_BACTERIAL", "p_VIRAL"]
    rows = {row["path"]: row for row in read_rows(tmp_path / "results.csv")}
    assert rows["a.png"]["p_VIRAL"] == "" and rows["c.png"]["p_NORMAL"] == ""
    assert (rows["b.png"]["p_BACTERIAL"], rows["b.png"]["p_VIRAL"]) == ("0.200000", "0.700000")
    with pytest.raises(ResultsError, match="other labels"):
        ResultsWriter(tmp_path, ("NORMAL", "PNEUMONIA"))
