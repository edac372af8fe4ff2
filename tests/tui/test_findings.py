"""A model with several findings in the app: the review shows every finding's probability and
threshold, a confirmation is recorded against the finding named, and the triage table names the
finding each row is flagged for (the two-finding bundle of tests/runtime/findings_bundle.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App, ComposeResult

from runtime.clinic.review import ReviewLog
from runtime.running.results import row_probabilities
from tests.runtime.findings_bundle import SECOND
from tests.tui.helpers import SIZE, text_of
from tests.tui.test_review import open_and_sign
from tui.app import CxrApp
from tui.review_queue import open_review
from tui.triage.table import ResultsTable

OUT = Path("results") / "xrays-findings"


@pytest.fixture
def triaged_findings(workspace: Path, findings_bundle: Path) -> Path:
    """The workspace's X-rays (and one more that the model finds likely EFFUSION) triaged with the
    two-finding bundle into results/."""
    from runtime.bundle.load import load_bundle
    from runtime.running.triage import triage

    bundle = load_bundle(findings_bundle, "model.fp32.xml")
    triage(Path("xrays"), bundle, OUT, workers=1, check_device=False)
    return workspace / OUT


@pytest.mark.asyncio
async def test_review_shows_every_finding_and_confirms_the_one_named(triaged_findings: Path):
    folder = open_review(triaged_findings)
    assert folder.several and list(folder.thresholds) == ["PNEUMONIA", SECOND]
    assert folder.cases, "the real X-rays give flagged cases"
    first = folder.cases[0]
    named = folder.finding_of(first)
    assert named in folder.thresholds
    async with CxrApp(review=OUT).run_test(size=SIZE) as pilot:
        screen = await open_and_sign(pilot, "AM")
        shown = text_of(screen.query_one("#case"))
        p = row_probabilities(first.row)
        for finding, threshold in folder.thresholds.items():  # every finding: p and threshold
            assert f"{finding:<9} {p[finding]:.3f} · flags at ≥ {threshold:.3f}" in shown, shown
        if not first.out_of_scope:
            assert f"flagged: {named}" in shown
        table = screen.query_one("#cases")
        assert [c.label.plain for c in table.columns.values()] == [
            "decision", "prob.", "finding", "file"]
        assert table.get_row_at(0)[2] == named
        await pilot.press("y")
        await pilot.pause()
    (entry,) = ReviewLog(triaged_findings).entries
    assert (entry.action, entry.path) == ("confirmed", first.path)
    # the review log holds the named finding's probability and threshold
    assert float(entry.probability) == pytest.approx(p[named], abs=1e-6)
    assert float(entry.threshold) == folder.thresholds[named]


class _Table(App):
    def compose(self) -> ComposeResult:
        yield ResultsTable()


ROWS = [{"path": "a.jpeg", "status": "ok", "prediction": "VIRAL", "probability": "0.410000",
         "flagged": "1", "scope": "in"},
        {"path": "b.jpeg", "status": "ok", "prediction": "NORMAL", "probability": "0.100000",
         "flagged": "0", "scope": "in"}]


@pytest.mark.asyncio
async def test_the_triage_table_names_the_finding_when_there_are_several():
    async with _Table().run_test(size=SIZE) as pilot:
        table = pilot.app.query_one(ResultsTable)
        results = table.query_one("#results")
        table.set_findings(["PNEUMONIA"])  # one finding: the table as it always was
        table.add(ROWS)
        assert [c.label.plain for c in results.columns.values()] == ["", "probability", "file"]
        table.set_findings(["BACTERIAL", "VIRAL"])
        table.add(ROWS)
        await pilot.pause()
        assert [c.label.plain for c in results.columns.values()] == [
            "", "probability", "file", "prediction"]
        assert [results.get_row_at(i)[3].plain for i in range(2)] == ["VIRAL", "NORMAL"]
        table.set_findings(["PNEUMONIA"])  # the next run's model has one: the column goes
        assert [c.label.plain for c in results.columns.values()] == ["", "probability", "file"]


def test_one_finding_runs_review_as_before(tmp_path: Path):
    """A run.json without thresholds (one finding, or an older run): no finding column, the
    run's threshold recorded."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "run.json").write_text('{"folder": "%s", "threshold": 0.25}' % tmp_path)
    (out / "results.csv").write_text(
        "path,status,prediction,probability,flagged,latency_ms,error,width,height,decode,scope,"
        "scope_reason,file_bytes,file_mtime_ns,sha256,reread\n"
        "x.jpeg,ok,PNEUMONIA,0.800000,1,1.0,,10,10,jpeg,in,ok,1,1,,\n")
    folder = open_review(out)
    assert not folder.several and folder.finding_of(folder.cases[0]) == ""
    assert folder.threshold_of(folder.cases[0]) == "0.25"


def test_the_model_words_name_every_findings_threshold(findings_bundle: Path, cpu_bundle: Path):
    from tui.bundle import threshold_words
    from tui.sources import find_bundles
    from tui.triage.setup import _flags_at

    (choice, *_), _ = find_bundles([findings_bundle], [])
    assert list(choice.thresholds) == ["PNEUMONIA", SECOND]
    t = choice.thresholds
    assert _flags_at(t) == (f"flags when a finding reaches its threshold: PNEUMONIA ≥ "
                            f"{t['PNEUMONIA']:.3f}, {SECOND} ≥ {t[SECOND]:.3f} ")
    assert f"its findings reaches that finding's threshold: PNEUMONIA {t['PNEUMONIA']:.3f}, " \
        f"{SECOND} {t[SECOND]:.3f}" in threshold_words(choice)
    (one, *_), _ = find_bundles([cpu_bundle], [])
    assert _flags_at(one.thresholds) == f"flags at probability ≥ {one.threshold:.3f} "
    assert threshold_words(one).startswith("An X-ray is flagged for a doctor when the model's "
                                           "probability of PNEUMONIA is")
