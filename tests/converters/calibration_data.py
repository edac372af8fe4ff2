"""Labelled site data for the calibration tests: real Kermany test X-rays listed in a CSV (never
copied), plus one out-of-scope image and one unreadable file, and one calibration run."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

SITE = "St Example paediatrics"
TARGET = 0.85


def kermany(data_dir: Path, label: str, count: int, skip: int = 0) -> list[Path]:
    files = sorted((data_dir / "kermany_test_224" / label).glob("*.jpeg"))[skip:skip + count]
    assert len(files) == count, f"not enough {label} images in {data_dir}"
    return files


def write_csv(path: Path, rows: list[tuple[Path | str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["path", "label"])
        out.writerows([str(p), label] for p, label in rows)
    return path


def tinted_xray(source: Path, dest: Path) -> Path:
    """A real X-ray turned into a colour picture (out of scope by the colour rule)."""
    gray = np.asarray(Image.open(source).convert("L"), dtype=np.float32)
    rgb = np.stack([gray, gray * 0.55, gray * 0.2], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(dest)
    return dest


def file_hashes(folder: Path) -> dict[str, tuple[str, int]]:
    from runtime.bundle.hashing import sha256_file

    return {p.relative_to(folder).as_posix(): (sha256_file(p), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    from converters.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def run_site_calibration(root: Path, bundle: Path, data_dir: Path) -> dict:
    extras = root / "extras"
    extras.mkdir()
    tinted_xray(kermany(data_dir, "PNEUMONIA", 1, skip=200)[0], extras / "colour.png")
    text = extras / "scan-notes.jpg"
    text.write_text("reception notes, not an image\n")
    # enough for 50 in scope per class: the tiny model's feature guard marks out about half of
    # the squashed 224 px NORMAL copies and a fifth of the PNEUMONIA ones (docs/scope-and-calibration.md)
    rows = [(p, "NORMAL") for p in kermany(data_dir, "NORMAL", 130)] + \
           [(p, "PNEUMONIA") for p in kermany(data_dir, "PNEUMONIA", 90)] + \
           [(Path("extras/colour.png"), "pneumonia"), (Path("extras/scan-notes.jpg"), "Normal")]
    labels = write_csv(root / "labels.csv", rows)
    before = file_hashes(bundle)
    out, work = root / "cpu-site", root / "work"
    code, stdout, stderr = run_cli(["calibrate", "--bundle", str(bundle), "--labelled",
                                    str(labels), "--site", SITE, "--sensitivity", str(TARGET),
                                    "--out", str(out), "--work", str(work), "--quiet"])
    assert code == 0, stderr
    return {"out": out, "work": work, "csv": labels, "stdout": stdout, "before": before,
            "bundle": bundle}
