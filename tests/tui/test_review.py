"""The review queue driven with the keyboard only, over a real triage of real X-rays: decisions
persisted in review.csv (results.csv untouched), notes, undo as a correction, resume after the
app is closed and reopened; the X-ray viewer (zoom, DICOM window/level); the DICOM SR action."""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from runtime.clinic.review import ReviewLog
from tests.tui.conftest import PINNED_ARTIFACT
from tests.tui.helpers import SIZE, snapshot_app, text_of, wait_until
from tui.app import CxrApp
from tui.archive import sr_folder, write_sr
from tui.picture import View, load_picture, render
from tui.review import ReviewScreen, XrayScreen
from tui.review_queue import open_review, review_order

OUT = Path("results") / "xrays-cpu-openvino-fp32"


@pytest.fixture
def triaged(workspace: Path) -> Path:
    """The workspace's X-rays triaged with the pinned artifact into results/ (as `r` would)."""
    from runtime.bundle.load import load_bundle
    from runtime.running.triage import triage

    triage(Path("xrays"), load_bundle(Path("dist/cpu"), PINNED_ARTIFACT), OUT, workers=1,
           check_device=False)
    return workspace / OUT


async def open_and_sign(pilot, initials: str = "AM") -> ReviewScreen:
    """The review opens with the reviewer's name asked (prefilled with the last one)."""
    await wait_until(pilot, lambda: isinstance(pilot.app.screen_stack[-2], ReviewScreen)
                     if len(pilot.app.screen_stack) > 1 else False, what="the name prompt")
    box = pilot.app.screen.query_one("#text")
    box.value = ""
    await pilot.press(*initials, "enter")
    screen = pilot.app.screen
    assert isinstance(screen, ReviewScreen)
    await shown(pilot, screen)
    return screen


async def shown(pilot, screen: ReviewScreen) -> None:
    await wait_until(pilot, lambda: screen.picture_shown == screen.case.file, what="the X-ray")


def test_queue_is_flagged_by_probability_then_out_of_scope():
    rows = [{"path": "a", "status": "ok", "flagged": "0", "probability": "0.1", "scope": "in"},
            {"path": "b", "status": "ok", "flagged": "1", "probability": "0.6", "scope": "in"},
            {"path": "c", "status": "ok", "flagged": "1", "probability": "0.9", "scope": "in"},
            {"path": "photo", "status": "ok", "flagged": "1", "probability": "0.95",
             "scope": "out"},
            {"path": "bad", "status": "error", "flagged": "", "probability": ""}]
    assert [r["path"] for r in review_order(rows)] == ["c", "b", "photo"]


@pytest.mark.asyncio
async def test_review_keyboard_only_persists_undoes_and_resumes(triaged: Path):
    results_before = (triaged / "results.csv").read_bytes()
    cases = open_review(triaged).cases
    assert len(cases) >= 3, "the real X-rays give at least three flagged cases"
    async with CxrApp(folder=Path("xrays"), out=OUT).run_test(size=SIZE) as pilot:
        await pilot.press("v")  # from the triage screen: --out holds results.csv
        screen = await open_and_sign(pilot)
        assert screen.index == 0 and screen.case.path == cases[0].path
        await pilot.press("y")  # confirm case 1, move on to case 2
        await shown(pilot, screen)
        await pilot.press("n")  # overrule case 2
        await shown(pilot, screen)
        await pilot.press("c", *"recheck lateral", "enter")  # a note on case 3
        await pilot.pause()
        assert "recheck lateral" in text_of(screen.query_one("#case"))
        await pilot.press("z")  # undo takes the note back
        await pilot.pause()
        assert "recheck lateral" not in text_of(screen.query_one("#case"))
        assert text_of(screen.query_one("#progress")).endswith(f"2 of {len(cases)} reviewed")

    log = ReviewLog(triaged)
    assert [(e.path, e.action, e.reviewer) for e in log.entries] == [
        (cases[0].path, "confirmed", "AM"), (cases[1].path, "overruled", "AM"),
        (cases[2].path, "note", "AM"), (cases[2].path, "undo", "AM")]
    assert log.entries[3].undoes == log.entries[2].id
    first = log.entries[0]
    assert first.image_sha256 == hashlib.sha256(cases[0].file.read_bytes()).hexdigest()
    assert first.artifact == PINNED_ARTIFACT and float(first.threshold) > 0
    assert first.probability == cases[0].row["probability"]
    assert (triaged / "results.csv").read_bytes() == results_before  # never rewritten

    # closed and reopened (from the start, --review): resumes at the first undecided case
    async with CxrApp(review=OUT).run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: len(pilot.app.screen_stack) > 2, what="the name prompt")
        name = pilot.app.screen.query_one("#text").value
        screen = await open_and_sign(pilot, "AM")
        assert name == "AM", "the prompt offers the last reviewer"
        assert screen.index == 2
        await pilot.press("z")  # undo goes back to case 2 and takes its decision back
        await pilot.pause()
        assert screen.index == 1
        assert "decision: –" in text_of(screen.query_one("#case"))
    state = ReviewLog(triaged).cases()
    assert state[cases[0].path].decision == "confirmed" and cases[1].path not in state


@pytest.mark.asyncio
async def test_another_reviewers_decision_shows_as_a_second_opinion(triaged: Path):
    from runtime.clinic.review import ReviewEntry

    cases = open_review(triaged).cases
    async with CxrApp(review=OUT).run_test(size=SIZE) as pilot:
        screen = await open_and_sign(pilot, "AM")
        await pilot.press("y")  # AM confirms case 1
        await shown(pilot, screen)
        # meanwhile another reviewer, in another process, overrules case 1 and decides case 2
        other = ReviewLog(triaged)
        other.append(ReviewEntry(cases[0].path, "", "overruled", reviewer="ZZ"))
        other.append(ReviewEntry(cases[1].path, "", "unsure", reviewer="ZZ"))
        await pilot.press("k")  # back to case 1
        await shown(pilot, screen)
        shown_text = text_of(screen.query_one("#case"))
        assert "decision: confirmed by AM" in shown_text
        assert "second opinion: normal by ZZ" in shown_text
        await pilot.press("z")  # AM's undo takes back AM's own decision, not ZZ's
        await pilot.pause()
    state = ReviewLog(triaged).cases()
    assert [(o.reviewer, o.decision) for o in state[cases[0].path].opinions] == [
        ("ZZ", "overruled")]
    assert state[cases[1].path].decision == "unsure"


@pytest.mark.asyncio
async def test_the_review_says_which_run_still_writes_the_results(triaged: Path):
    import os

    from runtime.running.lock import FolderLock

    with FolderLock(triaged, command="python -m runtime triage"):
        async with CxrApp(review=OUT).run_test(size=SIZE) as pilot:
            await open_and_sign(pilot, "AM")
            said = [n.message for n in pilot.app._notifications]
    assert any(f"Triage is still writing these results (process {os.getpid()} on " in m
               and "python -m runtime triage" in m for m in said), said


@pytest.mark.asyncio
async def test_full_screen_zooms_and_window_level_is_for_dicom_only(triaged: Path):
    async with CxrApp(review=OUT).run_test(size=SIZE) as pilot:
        screen = await open_and_sign(pilot)
        await pilot.press("f")
        full = pilot.app.screen
        assert isinstance(full, XrayScreen)
        await pilot.press("plus", "plus", "right")
        assert full.view.zoom == 2.0 and full.view.cx > 0.5
        await pilot.press("left_square_bracket")  # a JPEG: window/level refused, said why
        assert full.view.center is None
        assert any("DICOM" in n.message for n in pilot.app._notifications)
        await pilot.press("escape")
        assert pilot.app.screen is screen


def test_dicom_window_level_on_a_real_dicom(data_dir: Path):
    picture = load_picture(data_dir / "dicom" / "Fake_MONOHR1.dcm")  # MONOCHROME1
    assert picture.window is not None and picture.window.invert
    default = View().windowed(picture)  # the default window reproduces the decoder's picture
    shown_default = np.asarray(render(picture, default), dtype=int)
    assert np.abs(shown_default - picture.pixels.astype(int)).max() <= 4
    narrow = np.asarray(render(picture, default.windowed(picture, 0, 0.5)), dtype=int)
    assert narrow.std() > shown_default.std()  # more contrast
    darker = np.asarray(render(picture, default.windowed(picture, 0.2, 1)), dtype=int)
    assert darker.mean() > shown_default.mean()  # MONOCHROME1: a higher level shows brighter
    zoomed = render(picture, View(zoom=2.0))
    assert zoomed.size == (picture.pixels.shape[1] // 2, picture.pixels.shape[0] // 2)


def test_sr_action_says_what_is_missing_and_where_it_wrote(tmp_path: Path, monkeypatch):
    results = tmp_path / "results" / "xrays-cpu"
    monkeypatch.setitem(sys.modules, "runtime.clinic.report_sr", None)  # the writer not installed
    ok, text = write_sr(results)
    assert not ok and "runtime.clinic.report_sr" in text

    calls = []
    fake = types.ModuleType("runtime.clinic.report_sr")

    def write_reports(results_dir: Path, out: Path) -> list[Path]:
        calls.append((results_dir, out))
        return [out / "a.dcm", out / "b.dcm"]

    fake.write_reports = write_reports
    monkeypatch.setitem(sys.modules, "runtime.clinic.report_sr", fake)
    ok, text = write_sr(results)
    assert ok and calls == [(results, tmp_path / "results" / "xrays-cpu-sr")]
    assert sr_folder(results) == tmp_path / "results" / "xrays-cpu-sr"
    assert "2 DICOM SR file(s)" in text and "xrays-cpu-sr" in text

    def missing_extra(results_dir: Path, out: Path) -> list[Path]:
        raise ModuleNotFoundError("No module named 'highdicom'", name="highdicom")

    fake.write_reports = missing_extra
    ok, text = write_sr(results)
    assert not ok and "[dicom]" in text and "highdicom" in text


def test_sr_action_writes_reports_for_real_dicoms_beside_the_results(workspace: Path,
                                                                     data_dir: Path):
    pytest.importorskip("highdicom")
    from runtime.bundle.load import load_bundle
    from runtime.running.triage import triage

    dicoms = workspace / "dicoms"
    dicoms.mkdir()
    for source in (data_dir / "dicom").glob("*.dcm"):
        (dicoms / source.name).write_bytes(source.read_bytes())
    out = workspace / "results" / "dicoms"
    triage(dicoms, load_bundle(Path("dist/cpu"), PINNED_ARTIFACT), out, workers=1,
           check_device=False)
    ok, text = write_sr(out)
    written = sorted((workspace / "results" / "dicoms-sr").rglob("*.dcm"))
    assert ok and f"Wrote {len(written)} DICOM SR" in text and len(written) == 3
    import pydicom

    report = pydicom.dcmread(written[0])
    assert report.Modality == "SR"


def test_snapshot_review(triaged: Path, snap_compare):
    app = snapshot_app(folder=Path("xrays"), out=OUT)

    async def review_two_cases(pilot):
        await pilot.press("v")
        screen = await open_and_sign(pilot, "AM")
        await pilot.press("y")
        await shown(pilot, screen)
        await pilot.press("c", *"recheck lateral", "enter")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=review_two_cases)


def test_review_of_a_folder_without_results_is_refused_before_the_app_starts(tmp_path: Path):
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-m", "tui", "--review", str(tmp_path)], cwd=repo,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "holds no results.csv" in out.stderr
