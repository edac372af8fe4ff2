"""The emulated-ARM comparison reads every output column (results.csv's p_<label>), not only the
row's probability: a model with several findings differing on another label is caught."""

from __future__ import annotations

from pathlib import Path

from converters.emulation import compare

HEADER = "path,status,prediction,probability,flagged,p_NORMAL,p_BACTERIAL,p_VIRAL\n"


def _results(path: Path, viral: str, old: bool = False) -> Path:
    rows = [f"NORMAL/a.jpeg,ok,NORMAL,0.100000,0,0.800000,0.100000,{viral}",
            "VIRAL/b.jpeg,ok,VIRAL,0.500000,1,0.300000,0.200000,0.500000"]
    if old:  # written before the label columns
        path.write_text(HEADER.split(",p_")[0] + "\n" +
                        "".join(",".join(r.split(",")[:5]) + "\n" for r in rows))
    else:
        path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def test_a_difference_in_another_label_counts(tmp_path: Path):
    host = compare.read_results(_results(tmp_path / "host.csv", "0.100000"))
    assert host["NORMAL/a.jpeg"].probabilities == {"NORMAL": 0.8, "BACTERIAL": 0.1, "VIRAL": 0.1}
    same = compare.compare_results(host, compare.read_results(_results(tmp_path / "same.csv",
                                                                       "0.100000")),
                                   artifact="m", engine="onnxruntime", tolerance=1e-3)
    assert same.passed and same.max_abs_diff == 0.0
    # the row's own probability (BACTERIAL's, the likeliest finding) is the same on both sides;
    # VIRAL's differs by 0.05 on the emulated machine
    other = compare.compare_results(host, compare.read_results(_results(tmp_path / "emu.csv",
                                                                        "0.150000")),
                                    artifact="m", engine="onnxruntime", tolerance=1e-3)
    assert abs(other.max_abs_diff - 0.05) < 1e-9 and not other.passed


def test_results_without_label_columns_compare_the_probability(tmp_path: Path):
    host = compare.read_results(_results(tmp_path / "host.csv", "0.1", old=True))
    emulated = compare.read_results(_results(tmp_path / "emu.csv", "0.9", old=True))
    assert host["NORMAL/a.jpeg"].probabilities == {}
    result = compare.compare_results(host, emulated, artifact="m", engine="onnxruntime",
                                     tolerance=1e-3)
    assert result.passed and result.max_abs_diff == 0.0
