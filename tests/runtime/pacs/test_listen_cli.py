"""``python -m runtime listen``: arguments refused in plain words, and ``--status`` of a folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime.pacs.destinations import CStore, Stow
from runtime.pacs.listener import Allowed
from runtime.pacs.spool import is_uid

REPO = Path(__file__).resolve().parents[3]


def _listen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime", "listen", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


def test_destinations_and_allow_list_parse_or_say_the_form():
    assert CStore.parse("PACS@10.0.0.5:104", "CXRKIT") == CStore("PACS", "10.0.0.5", 104, "CXRKIT")
    for bad in ("PACS@10.0.0.5", "@host:104", "PACS@host:70000", "A" * 17 + "@h:1"):
        with pytest.raises(ValueError, match="AE@HOST:PORT"):
            CStore.parse(bad, "CXRKIT")
    assert Allowed.parse("PACS@10.0.0.5").admits("PACS", "10.0.0.5")
    assert not Allowed.parse("PACS@10.0.0.5").admits("PACS", "10.0.0.6")
    assert Allowed.parse("PACS").admits("PACS  ", "any")
    with pytest.raises(ValueError, match="1 to 16"):
        Allowed.parse("@10.0.0.5")
    assert "secret" not in Stow("https://user:secret@pacs/dicom-web").shown
    assert is_uid("1.2.840.10008.5.1.4.1.1.1") and not is_uid("../../etc") and not is_uid("1." * 40)


def test_bad_arguments_exit_2_with_the_fix(tmp_path: Path):
    no_out = _listen("--bundle", str(tmp_path))
    assert no_out.returncode == 2 and "--out DIR is required" in no_out.stderr
    half_tls = _listen("--out", str(tmp_path / "o"), "--tls-cert", "c.pem")
    assert half_tls.returncode == 2 and "--tls-key" in half_tls.stderr
    bad_dest = _listen("--out", str(tmp_path / "o"), "--send-to", "PACS")
    assert bad_dest.returncode == 2 and "AE@HOST:PORT" in bad_dest.stderr
    no_bundle = _listen("--out", str(tmp_path / "o"), "--bundle", str(tmp_path / "none"))
    assert no_bundle.returncode == 2 and "error:" in no_bundle.stderr
    missing = _listen("--status", str(tmp_path / "none"))
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_status_of_an_empty_folder(tmp_path: Path):
    status = _listen("--status", str(tmp_path))
    assert status.returncode == 0
    assert "received 0, triaged 0" in status.stdout and "no destinations" in status.stdout


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd (Linux)")
def test_repeated_triage_passes_give_back_the_console_descriptor(tmp_path: Path, monkeypatch):
    """The listener runs a triage pass per arrival for weeks: each pass must give back the
    descriptor it borrows (the listener has a console stream of its own, as cmd_listen sets)."""
    import io
    import os

    from runtime.imaging.capture import library_output_to

    console = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), encoding="utf-8")
    monkeypatch.setattr("sys.stderr", console)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with library_output_to(tmp_path / "decode.log"):
            pass
    assert len(os.listdir("/proc/self/fd")) == before
    console.close()
