"""The population check: adults' chest X-rays are out of scope, Kermany's children in, in words.

The shipped check (``models/reference/population_check.onnx``) was fitted on the training side of
kermany_train_224's patient split against ``adult_cxr``; the Kermany TEST split (another set of
patients) is a held-out in-population source here, and the adults' verdict is checked in plain
words, through the bundle (manifest, sha256) and through triage.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.bundle.artifacts import read_manifest
from runtime.bundle.load import load_bundle
from runtime.contract.manifest import CHILDREN_1_TO_5, POPULATION_CHECK
from runtime.errors import BundleError
from runtime.imaging.decode import decode_file
from runtime.judging.population import PopulationCheck, load_check, thumbnail
from runtime.judging.scope import OUT_PREFIX, assess
from runtime.running.results import read_rows

MODELS = Path(__file__).resolve().parents[3] / "models"
WORDS = "looks like an adult chest X-ray; this model was trained on children aged 1–5"


def _shipped(model: str = "reference") -> PopulationCheck:
    card = json.loads((MODELS / model / "population_check.json").read_text())
    return load_check(MODELS / model / POPULATION_CHECK, card["limit"], card["share"],
                      CHILDREN_1_TO_5.description, card["looks_like"])


def _adults(data_dir: Path, source: str, n: int) -> list[Path]:
    """The first ``n`` adults (18 and over, by the manifest) of one adult_cxr source."""
    with open(data_dir / "adult_cxr" / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["path"].startswith(f"{source}/")
                and not (r["age"] and float(r["age"]) < 18)]
    return [data_dir / "adult_cxr" / r["path"] for r in sorted(rows, key=lambda r: r["path"])[:n]]


def _thumbs(paths: list[Path]) -> np.ndarray:
    return np.stack([thumbnail(decode_file(p).pixels) for p in paths])


@pytest.fixture(scope="module")
def thumbs(data_dir) -> dict[str, np.ndarray]:
    """The Kermany test split (never seen by the fit) and 25 adults of each source."""
    return {"kermany_test_224": _thumbs(sorted((data_dir / "kermany_test_224").rglob("*.jpeg"))),
            **{source: _thumbs(_adults(data_dir, source, 25)) for source in ("nih", "hannover")}}


@pytest.mark.parametrize("model", ["reference", "clinical"])
def test_adults_are_out_and_held_out_kermany_children_in(thumbs, model):
    check = _shipped(model)
    inside = check.scores(thumbs["kermany_test_224"]) <= check.limit
    print(f"\n{model}: kermany_test_224 in population: {inside.sum()}/{len(inside)}")
    # the goal is 97%; the shipped check (limit at 99% of validation) keeps 93.9%
    # (models/*/population_check.json): this guards against a worse check, not the goal
    assert len(inside) == 624 and inside.mean() >= 0.92
    for source in ("nih", "hannover"):
        outside = check.scores(thumbs[source]) > check.limit
        assert outside.sum() >= 24, f"{source}: {outside.sum()}/25 adults out"


def test_the_verdict_in_plain_words_and_the_dicom_age_wins(data_dir, tmp_path):
    import pydicom

    check = _shipped()
    adult = decode_file(_adults(data_dir, "nih", 1)[0])
    scope = assess(adult, CHILDREN_1_TO_5, check)
    assert not scope.inside and scope.reason.startswith(OUT_PREFIX) and WORDS in scope.reason
    assert assess(adult, CHILDREN_1_TO_5).inside  # without the check: every rule passes
    child = decode_file(data_dir / "kermany_test_224" / "PNEUMONIA" / "person1_virus_6.jpeg")
    assert assess(child, CHILDREN_1_TO_5, check).inside
    # an adult's DICOM: its PatientAge decides, whatever the picture looks like
    source = data_dir / "dicom" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    dataset = pydicom.dcmread(source)
    ages = {"003Y": True, "62": False}
    for age, inside in ages.items():
        dataset.PatientAge = age
        dataset.save_as(tmp_path / f"{age}.dcm")
        scope = assess(decode_file(tmp_path / f"{age}.dcm"), CHILDREN_1_TO_5, check)
        assert scope.inside is inside and WORDS not in scope.reason, (age, scope.reason)
    del dataset.PatientAge
    dataset.save_as(tmp_path / "no_age.dcm")
    scope = assess(decode_file(tmp_path / "no_age.dcm"), CHILDREN_1_TO_5, check)
    assert not scope.inside and WORDS in scope.reason


def test_the_bundle_declares_the_check_and_refuses_a_tampered_one(cpu_bundle, tmp_path):
    manifest = read_manifest(cpu_bundle)
    block = manifest.population_check
    assert block is not None and block.path == POPULATION_CHECK and block.looks_like
    assert any(f.path == POPULATION_CHECK and f.sha256 == block.sha256 for f in manifest.files)
    assert block.val_in_scope >= 0.99 and block.val_n > 500  # re-measured by the build
    assert load_bundle(cpu_bundle).population_check.limit == block.limit
    copy = tmp_path / "cpu"
    shutil.copytree(cpu_bundle, copy)
    graph = bytearray((copy / POPULATION_CHECK).read_bytes())
    graph[-1] ^= 0xFF
    (copy / POPULATION_CHECK).write_bytes(bytes(graph))
    with pytest.raises(BundleError, match=f"{POPULATION_CHECK} failed its sha256 check"):
        load_bundle(copy)


def test_triage_marks_adults_out_of_scope_in_words(data_dir, cpu_bundle, tmp_path):
    from runtime.__main__ import main

    folder = tmp_path / "in"
    folder.mkdir()
    adults = _adults(data_dir, "nih", 2) + _adults(data_dir, "hannover", 2)
    children = ["NORMAL/NORMAL2-IM-0007-0001.jpeg", "NORMAL/NORMAL2-IM-0012-0001.jpeg",
                "PNEUMONIA/person1_virus_6.jpeg", "PNEUMONIA/person3_virus_15.jpeg"]
    for source in adults + [data_dir / "kermany_test_224" / c for c in children]:
        shutil.copy2(source, folder / source.name)
    out = tmp_path / "out"
    assert main(["triage", str(folder), "--bundle", str(cpu_bundle), "--out", str(out),
                 "--quiet"]) == 0
    rows = {r["path"]: r for r in read_rows(out / "results.csv")}
    for adult in adults:
        row = rows[adult.name]
        assert row["scope"] == "out" and row["flagged"] == "1" and WORDS in row["scope_reason"]
    children = [r for p, r in rows.items() if p.startswith(("NORMAL2-", "person"))]
    assert len(children) == 4 and not any(WORDS in r["scope_reason"] for r in children)
