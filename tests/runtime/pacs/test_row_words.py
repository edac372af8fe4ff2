"""The gateway's console words for a row: the verdict, naming the finding when there are several."""

from __future__ import annotations

import pytest

pytest.importorskip("pynetdicom")

from runtime.pacs.gateway import _row_words  # noqa: E402
from runtime.running.results import Row  # noqa: E402


def _row(prediction: str, probability: float, flagged: bool, scope: str = "in",
         **p: float) -> Row:
    return Row("1.2.3.dcm", "ok", prediction, probability, flagged, 1.0, "", 10, 10, "dicom",
               scope, "a chest X-ray", probabilities=p)


def test_one_finding_words_are_as_before():
    row = _row("PNEUMONIA", 0.8123, True, NORMAL=0.1877, PNEUMONIA=0.8123)
    assert _row_words(row, ["PNEUMONIA"]) == "1.2.3.dcm: FLAGGED (probability 0.812)"
    assert _row_words(row) == "1.2.3.dcm: FLAGGED (probability 0.812)"
    cleared = _row("NORMAL", 0.1, False, NORMAL=0.9, PNEUMONIA=0.1)
    assert _row_words(cleared, ["PNEUMONIA"]) == "1.2.3.dcm: not flagged (probability 0.100)"


def test_several_findings_name_the_finding():
    findings = ["BACTERIAL", "VIRAL"]
    viral = _row("VIRAL", 0.41, True, NORMAL=0.5, BACTERIAL=0.09, VIRAL=0.41)
    assert _row_words(viral, findings) == "1.2.3.dcm: FLAGGED VIRAL (probability 0.410)"
    cleared = _row("NORMAL", 0.15, False, NORMAL=0.8, BACTERIAL=0.15, VIRAL=0.05)
    assert _row_words(cleared, findings) == \
        "1.2.3.dcm: not flagged (NORMAL; BACTERIAL probability 0.150)"
    out = _row("OUT-OF-SCOPE", 0.41, True, "out", NORMAL=0.5, BACTERIAL=0.09, VIRAL=0.41)
    assert _row_words(out, findings) == "1.2.3.dcm: OUT OF SCOPE, flagged (why: results.csv)"
