"""Screen 4: the queue of a real listener folder (spooled DICOMs, triaged by the folder runner,
SRs written as the listener writes them, an outbox with one destination down and one refusing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable

from runtime.bundle.load import load_bundle
from runtime.pacs.destinations import Unreachable
from runtime.pacs.outbox import Outbox
from runtime.pacs.reports import write_new_reports
from runtime.pacs.spool import prepare, write_instance
from runtime.running.triage import triage
from tests.runtime.pacs.kit import chest_dx, copies, uid_of
from tests.tui.helpers import SIZE, text_of, wait_until
from tui import listener as listener_screen
from tui.__main__ import main
from tui.app import CxrApp
from tui.review import ReviewScreen

DOWN_WHY = "cannot connect to 127.0.0.1:4242 (connection refused)"
REFUSED_WHY = "0xA700 out of resources (the archive's disk is full)"


class Down:
    """A destination that cannot be reached (as a C-STORE SCP that is switched off)."""

    name, shown = "PACS_127.0.0.1_4242", "PACS@127.0.0.1:4242"

    def send(self, files: list[Path]) -> dict[Path, str]:
        raise Unreachable(DOWN_WHY)


class RefusesTheFirst:
    """A destination that stores every SR but the first (as an archive answering 0xA700)."""

    name, shown = "stow_archive", "http://archive/dicom-web"

    def send(self, files: list[Path]) -> dict[Path, str]:
        return {path: REFUSED_WHY if i == 0 else "" for i, path in enumerate(files)}


def spool(out: Path, sources: list[Path]) -> None:
    for source in sources:
        write_instance(out, uid_of(source), source.read_bytes())


@pytest.fixture
def listener_out(tmp_path: Path, tui_cpu_bundle: Path, data_dir: Path) -> Path:
    """A listener's --out folder: 3 instances triaged with SRs, a 4th waiting for triage."""
    out = tmp_path / "listener"
    prepare(out)
    sources = copies(chest_dx(data_dir), tmp_path / "sent", 4)
    spool(out, sources[:3])
    triage(out / "spool", load_bundle(tui_cpu_bundle), out, workers=1, check_device=False)
    assert not write_new_reports(out).problems
    spool(out, sources[3:])
    outbox = Outbox(out, [Down(), RefusesTheFirst()])
    assert outbox.enqueue_new() == 6
    assert outbox.deliver_due() == 2
    return out


def cells(table: DataTable) -> list[list[str]]:
    return [[getattr(c, "plain", str(c)) for c in table.get_row_at(i)]
            for i in range(table.row_count)]


@pytest.mark.asyncio
async def test_listener_screen_shows_the_queue_and_why_a_send_failed(listener_out, data_dir,
                                                                     tmp_path, monkeypatch):
    monkeypatch.setattr(listener_screen, "REFRESH_S", 0.2)
    app = CxrApp(listener=listener_out, search=[])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        screen = app.screen
        await wait_until(pilot, lambda: screen.shown_status is not None, what="the queue")
        counts = " ".join(text_of(screen.query_one("#listener-counts")).split())
        assert "received 4" in counts and "triaged 3" in counts
        assert "waiting for triage 1" in counts and "SRs written 3" in counts
        assert "could not be triaged 0" in counts
        flagged = screen.shown_status["flagged"]
        assert f"flagged {flagged}" in counts
        rows = {row[0]: row for row in cells(screen.query_one("#destinations", DataTable))}
        assert set(rows) == {Down.shown, RefusesTheFirst.shown}
        assert rows[Down.shown][1:3] == ["0", "3"] and rows[Down.shown][4] == DOWN_WHY
        assert rows[RefusesTheFirst.shown][1:3] == ["2", "1"]
        refused = cells(screen.query_one("#refused", DataTable))
        assert len(refused) == 1 and refused[0][0] == RefusesTheFirst.shown
        assert refused[0][1] == REFUSED_WHY and refused[0][2].endswith(".sr.dcm")

        # the timer reads the folder again: a new instance arrives
        spool(listener_out, copies(chest_dx(data_dir), tmp_path / "later", 1))
        await wait_until(pilot, lambda: screen.shown_status["received"] == 5, 10,
                         "the refresh to see the new instance")
        assert "waiting for triage 2" in " ".join(
            text_of(screen.query_one("#listener-counts")).split())

        await pilot.press("v")  # the review of the same folder (the reviewer's name first)
        await pilot.pause()
        assert any(isinstance(s, ReviewScreen) for s in app.screen_stack)


@pytest.mark.asyncio
async def test_listener_screen_without_a_folder_says_how_to_start_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = CxrApp(search=[])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await pilot.pause()
        head = text_of(app.screen.query_one("#listener-head"))
        assert "No listener folder open" in head and listener_screen.START_COMMAND in head
        await pilot.press("o")
        await pilot.pause()
        await pilot.press(*str(tmp_path), "enter")  # not a listener folder: said, not opened
        await pilot.pause()
        assert "not a listener folder" in text_of(app.screen.query_one("#error"))
        (tmp_path / "spool").mkdir()
        await pilot.press("enter")
        await pilot.pause()
        assert app.listener_folder == tmp_path and app.screen.shown_status["received"] == 0


def test_listener_option_refuses_a_folder_that_is_not_a_listeners(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--listener", str(tmp_path)])
    assert exit_.value.code == 2
    assert "not a listener folder" in capsys.readouterr().err
