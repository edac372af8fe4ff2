"""``benchmarks run`` on a bundle with several findings: every finding's quality (one against the
rest, at the bundle's threshold for it) in report.json, report.md and the TUI's reports screen;
a one-finding bundle's report keeps its shape (no per-finding keys)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.findings_bundle import SECOND

FINDINGS = ["PNEUMONIA", SECOND]


@pytest.fixture(scope="module")
def findings_report(findings_bundle: Path, cpu_bundle: Path, data_dir: Path, tmp_path_factory
                    ) -> tuple[dict, str]:
    """One quick run (no end to end) over the two-finding bundle and the one-finding original."""
    from benchmarks.__main__ import main as benchmarks_main

    out = tmp_path_factory.mktemp("bench-findings")
    assert benchmarks_main(["run", "--bundle", str(findings_bundle), "--bundle", str(cpu_bundle),
                            "--quick", "--no-e2e", "--repeats", "12", "--data", str(data_dir),
                            "--out", str(out), "-q"]) == 0
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def _expected(bundle: Path, artifact: str, data_dir: Path) -> dict[str, dict]:
    """Each finding against the rest on the real test images, computed here independently."""
    from converters.data.pneumoniamnist import load_pneumoniamnist
    from evaluation.metrics import binary_metrics
    from runtime.bundle.load import load_bundle
    from runtime.preprocess.cpu import normalize

    loaded = load_bundle(bundle, artifact, device="cpu")
    test = load_pneumoniamnist(data_dir / "pneumoniamnist.npz").test
    inputs = normalize(test.images, loaded.preprocessing)
    probs = np.concatenate([loaded.predict(inputs[s:s + 64]) for s in range(0, len(inputs), 64)])
    carries = {"PNEUMONIA": test.labels == 1, SECOND: test.labels == 0}  # SECOND: NORMAL output
    return {name: binary_metrics(carries[name], probs[:, loaded.classes.index(name)],
                                 loaded.thresholds[name]).as_dict() for name in FINDINGS}


def test_every_finding_gets_its_own_quality_at_its_threshold(findings_report, findings_bundle,
                                                             data_dir):
    report, _ = findings_report
    section = next(s for s in report["bundles"] if s["path"] == str(findings_bundle))
    baseline = section["rows"][0]
    assert baseline["kind"] == "baseline" and list(baseline["quality"]["findings"]) == FINDINGS
    artifacts = [r for r in section["rows"] if r["kind"] == "artifact"]
    assert artifacts and all(r["status"] == "ok" for r in artifacts)
    for row in artifacts:
        quality = row["quality"]
        expected = _expected(findings_bundle, row["name"], data_dir)
        assert list(quality["findings"]) == FINDINGS
        for name in FINDINGS:
            got = quality["findings"][name]
            for key in ("tp", "fn", "tn", "fp", "n"):
                assert got[key] == expected[name][key], (row["name"], name, key)
            for key in ("auc", "sensitivity", "specificity", "threshold"):
                assert got[key] == pytest.approx(expected[name][key], abs=1e-12)
            delta = row["quality_delta"]["findings"][name]
            base = baseline["quality"]["findings"][name]
            assert delta["sensitivity"] == pytest.approx(got["sensitivity"] - base["sensitivity"])
        # the first finding's figures stay where a one-finding report has them
        assert {k: quality[k] for k in ("auc", "sensitivity", "tp", "threshold")} == \
            {k: quality["findings"]["PNEUMONIA"][k] for k in ("auc", "sensitivity", "tp",
                                                               "threshold")}
        assert quality["findings"][SECOND]["threshold"] == pytest.approx(0.9)
        assert f"{SECOND} sensitivity" in row["verdict"]


def test_a_one_finding_bundle_reports_as_before(findings_report, cpu_bundle):
    report, markdown = findings_report
    section = next(s for s in report["bundles"] if s["path"] == str(cpu_bundle))
    for row in section["rows"]:
        assert "findings" not in row["quality"]
        assert "findings" not in (row["quality_delta"] or {})
        assert SECOND not in row["verdict"]
    assert markdown.count("Quality per finding") == 1
    table = markdown.split("Quality per finding", 1)[1].split("\n\n")[1]
    assert table.count(f"| {SECOND} |") == len(report["bundles"][0]["rows"])


def test_the_contract_and_the_reports_screen_read_every_finding(findings_report, cpu_bundle):
    from runtime.contract.manifest import report_from_dict
    from tui.reports import finding_cells

    report, _ = findings_report
    typed = report_from_dict(report)
    several, one = typed.bundles
    if several.path == str(cpu_bundle):
        several, one = one, several
    row = several.rows[1]
    assert list(row.quality.findings) == FINDINGS
    assert row.quality.findings[SECOND].threshold == pytest.approx(0.9)
    cells = finding_cells(row)
    assert [c[1] for c in cells] == FINDINGS
    assert str(cells[1][2]) == "0.900"
    assert all(r.quality.findings is None and finding_cells(r) == [] for r in one.rows)
