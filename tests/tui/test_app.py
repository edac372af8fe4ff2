"""The clinic app driven headless with Textual's Pilot over real X-rays and a real bundle."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from textual.widgets import DataTable

from runtime.running.results import read_rows
from tests.tui.conftest import PINNED_ARTIFACT
from tests.tui.helpers import (
    SIZE,
    bundle_screen_text,
    manifest_digests,
    normalize,
    snapshot_app,
    text_of,
    wait_until,
)
from tui import fmt
from tui.app import CxrApp
from tui.sources import REPORT_COMMAND, default_out
from tui.triage.rows import sort_rows

REPO = Path(__file__).resolve().parents[2]


async def run_and_wait(pilot, screen) -> None:
    """Press r and wait until the run has reported back (done, cancelled or failed)."""
    before = screen.finished_runs
    await pilot.press("r")
    await wait_until(pilot, lambda: screen.finished_runs > before, 120, "the run to finish")


def flagged_in_table(table: DataTable) -> int:
    return sum(1 for key in table.rows if table.get_cell(key, "flag").plain == "⚑")


def test_help_runs_without_a_terminal():
    out = subprocess.run([sys.executable, "-m", "tui", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--bundle" in out.stdout and "FOLDER" in out.stdout


def test_sort_puts_flagged_first_then_probability():
    rows = [{"path": "a", "flagged": "0", "probability": "0.10"},
            {"path": "b", "flagged": "1", "probability": "0.50"},
            {"path": "c", "flagged": "1", "probability": "0.90"},
            {"path": "d", "flagged": "0", "probability": "0.15"}]
    assert [r["path"] for r in sort_rows(rows)] == ["c", "b", "d", "a"]


def test_sort_keeps_out_of_scope_rows_with_the_flagged_cases():
    rows = [{"path": "a", "flagged": "0", "probability": "0.40", "scope": "in"},
            {"path": "photo", "flagged": "1", "probability": "0.05", "scope": "out",
             "prediction": "OUT-OF-SCOPE"},
            {"path": "c", "flagged": "1", "probability": "0.90", "scope": "in"}]
    assert [r["path"] for r in sort_rows(rows)] == ["c", "photo", "a"]


def test_default_out_is_never_inside_the_input_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_out(Path("xrays"), None) == Path("results") / "xrays"
    (tmp_path / "xrays").mkdir()
    monkeypatch.chdir(tmp_path / "xrays")  # started from inside the folder of X-rays
    assert default_out(Path("."), None) == Path.home() / "cxr-results" / "xrays"


@pytest.mark.asyncio
async def test_select_folder_run_triage_and_open_the_other_screens(workspace):
    app = CxrApp()  # no FOLDER: the user picks it in the tree
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        tree = screen.query_one("#tree")
        tree.focus()
        await wait_until(pilot, lambda: len(tree.root.children) > 0, what="the folder tree")
        for _ in range(10):  # move the cursor to xrays/ and select it, as a user would
            node = tree.cursor_node
            if node is not None and node.data is not None and Path(node.data.path).name == "xrays":
                break
            await pilot.press("down")
        await pilot.press("enter")
        info = screen.query_one("#folder-info")
        await wait_until(pilot, lambda: "12 images" in text_of(info), what="the image count")
        assert screen.query_one("#out").value == "results/xrays-cpu-openvino-fp32"

        await run_and_wait(pilot, screen)
        status = text_of(screen.query_one("#status"))
        assert status.startswith("Done"), status

        csv_rows = read_rows(workspace / "results" / "xrays-cpu-openvino-fp32" / "results.csv")
        ok = [r for r in csv_rows if r["status"] == "ok"]
        bad = [r for r in csv_rows if r["status"] != "ok"]
        results = screen.query_one("#results", DataTable)
        errors = screen.query_one("#errors", DataTable)
        assert len(csv_rows) == 12
        assert results.row_count == len(ok) == 11
        assert errors.row_count == len(bad) == 1
        assert bad[0]["path"] == "notes-scan.jpg" and bad[0]["error"]
        assert str(errors.get_cell("notes-scan.jpg", "error")) == bad[0]["error"]  # shown as is
        flagged = sum(r["flagged"] == "1" for r in ok)
        assert flagged_in_table(results) == flagged
        summary = text_of(screen.query_one("#summary"))
        assert f"{len(csv_rows)} images" in summary and f"{flagged} flagged" in summary
        assert "results/xrays-cpu-openvino-fp32/results.csv" in text_of(screen.query_one("#where"))
        # the table is ordered flagged first, by probability
        shown = [results.get_row_at(i)[2].plain for i in range(results.row_count)]
        assert shown == [r["path"] for r in sort_rows(ok)]

        await pilot.press("2")
        reports = app.screen
        await wait_until(pilot, lambda: len(reports.query(DataTable)) == 3, what="report tables")
        assert any("★" in reports.query_one("#report-1", DataTable).get_row_at(i)[0].plain
                   for i in range(reports.query_one("#report-1", DataTable).row_count))

        await pilot.press("3")
        bundle = app.screen
        await wait_until(pilot, lambda: "verified" in text_of(bundle.query_one("#verify")),
                         what="the sha256 check")
        assert "✔ sha256 verified" in text_of(bundle.query_one("#verify"))


@pytest.mark.asyncio
async def test_cancel_midway_keeps_what_is_done(workspace, monkeypatch):
    """Rows reach the table while the run goes, handed over by the run: results.csv is read once
    a run (the rows of an earlier run, for the resume), never to follow the progress."""
    from runtime.bundle.load import Bundle
    from tui.triage import run

    real = Bundle.predict_with_features  # what score_batch calls for a bundle with a scope guard
    cancelled = threading.Event()
    calls = []

    def held(self, batch, **options):  # after the first batch the model waits for the cancel
        calls.append(len(batch))
        if len(calls) > 1:
            cancelled.wait(60)
        return real(self, batch, **options)

    reads = []

    def counted_read_rows(path):
        reads.append(path)
        return read_rows(path)

    monkeypatch.setattr(Bundle, "predict_with_features", held)
    monkeypatch.setattr(run, "read_rows", counted_read_rows)
    app = CxrApp(folder=Path("xrays"), batch=2, workers=1)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        results = screen.query_one("#results", DataTable)
        errors = screen.query_one("#errors", DataTable)
        await pilot.press("r")
        await wait_until(pilot, lambda: results.row_count == 2, 60,
                         "the first batch's rows in the table while the model holds the second")
        assert screen.running and len(reads) == 1
        await pilot.press("c")
        cancelled.set()
        await wait_until(pilot, lambda: not screen.running, 60, "the run to stop")
        out = workspace / "results" / "xrays-cpu-openvino-fp32"
        csv_rows = read_rows(out / "results.csv")
        summary = json.loads((out / "summary.json").read_text())
        assert summary["this_run"]["interrupted"] is True
        assert 0 < len(csv_rows) < 12
        assert results.row_count + errors.row_count == len(csv_rows)
        assert "Cancelled" in text_of(screen.query_one("#status"))
        assert "CANCELLED" in text_of(screen.query_one("#summary"))

        await run_and_wait(pilot, screen)  # running again resumes: the rest is done, nothing twice
        csv_rows = read_rows(out / "results.csv")
        assert len(csv_rows) == 12 == len({r["path"] for r in csv_rows})
        assert results.row_count + errors.row_count == 12
        assert len(reads) == 2  # once a run


@pytest.mark.asyncio
async def test_reports_screen_without_a_report_says_how_to_make_one(workspace):
    app = CxrApp(report=workspace / "nowhere" / "report.json")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await pilot.pause()
        head = text_of(app.screen.query_one("#report-head"))
        assert "No benchmark report yet" in head and REPORT_COMMAND in head


# -- snapshots: fixed terminal size, pinned manifest, committed report, timings masked --------


@pytest.fixture
def stable_timings(monkeypatch):
    monkeypatch.setattr(fmt, "seconds", lambda value: "‹time›")
    monkeypatch.setattr(fmt, "rate", lambda value: "‹rate›")


def test_snapshot_triage(workspace, stable_timings, snap_compare):
    app = snapshot_app(workspace / "dist" / "cpu", folder=Path("xrays"), artifact=PINNED_ARTIFACT)

    async def run_then_pick_the_second_case(pilot):
        screen = app.screen
        await wait_until(pilot, lambda: "12 images" in text_of(screen.query_one("#folder-info")))
        await run_and_wait(pilot, screen)
        await pilot.press("t", "down")  # the second most likely case, with its preview
        results = screen.query_one("#results", DataTable)
        second = Path("xrays") / results.get_row_at(1)[2].plain
        await wait_until(pilot, lambda: screen.preview_shown == second, what="the preview")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_then_pick_the_second_case)


def test_snapshot_reports(workspace, snap_compare):
    app = snapshot_app(workspace / "dist" / "cpu")

    async def open_reports(pilot):
        await pilot.press("2")
        await wait_until(pilot, lambda: len(app.screen.query(DataTable)) == 3)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_reports)


def test_snapshot_bundle(workspace, snap_compare):
    app = snapshot_app(workspace / "dist" / "cpu", artifact=PINNED_ARTIFACT)

    async def open_bundle(pilot):
        await pilot.press("3")
        await wait_until(pilot, lambda: "verified" in text_of(app.screen.query_one("#verify")))

    assert snap_compare(app, terminal_size=SIZE, run_before=open_bundle)


@pytest.mark.asyncio
async def test_typing_a_folder_path_selects_it(workspace):
    app = CxrApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        box = screen.query_one("#folder-path")
        box.focus()
        box.value = ""
        await pilot.press(*"xrays/normal", "enter")
        await wait_until(pilot, lambda: "6 images" in text_of(screen.query_one("#folder-info")))
        assert screen.folder == Path("xrays/normal")
        assert screen.query_one("#out").value == "results/normal-cpu-openvino-fp32"


@pytest.mark.asyncio
async def test_snapshot_masking_catches_a_wrong_sha256(workspace):
    """The digest masking is narrow: only the manifest's own digests, each on its own file's row.
    A digest that is not the manifest's, or one shown for the other file, stays different."""
    bundle = workspace / "dist" / "cpu"
    digests = manifest_digests(bundle)
    app = CxrApp(artifact=PINNED_ARTIFACT)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await wait_until(pilot, lambda: "verified" in text_of(app.screen.query_one("#verify")))
        await pilot.pause()
        svg = app.export_screenshot(title="Chest X-ray triage")
    xml_digest, bin_digest = (next(d for d, label in digests.items() if f"({name})" in label)
                              for name in ("model.fp32.xml", "model.fp32.bin"))
    assert xml_digest in svg and bin_digest in svg, "the bundle screen shows both digests"
    masked = normalize(svg, digests)
    assert xml_digest not in masked and "sha256(model.fp32.xml)" in masked

    flipped = xml_digest[:-1] + ("0" if xml_digest[-1] != "0" else "1")
    swapped = svg.replace(xml_digest, "@").replace(bin_digest, xml_digest).replace("@", bin_digest)
    for wrong in (svg.replace(xml_digest, flipped), swapped):
        assert normalize(wrong, digests) != masked


@pytest.mark.asyncio
async def test_bundle_screen_says_a_gate_measured_on_other_providers_is_provisional(
        workspace, built_bundles):
    """No GPU here: the gpu bundle's numbers come from the CPU provider and the screen says so."""
    from runtime.preprocess.gpu import cuda_usable

    if cuda_usable()[0]:
        pytest.skip("this machine has a usable GPU: the gpu bundle's gate is a plain pass")
    app = CxrApp(bundles=[built_bundles["gpu"]], artifact="onnx-fp16")
    async with app.run_test(size=SIZE) as pilot:
        body = await bundle_screen_text(pilot, app)
        assert "PROVISIONAL: measured on CPUExecutionProvider" in body
        assert "python -m runtime verify" in body
