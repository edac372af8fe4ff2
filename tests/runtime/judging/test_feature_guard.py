"""The feature-space scope guard: a second graph output on every artifact, the manifest block and
its reference file, and triage with it: the Kermany test split stays in scope, a corpus of
non-chest images (pydicom's test files, as DICOM and saved as pictures; matplotlib's and
scikit-image's sample pictures; the synthesised non-X-rays of test_scope) is all out of scope or
error rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.bundle.artifacts import read_manifest
from runtime.bundle.load import load_bundle
from runtime.contract.manifest import SCOPE_REFERENCE, ContractError, manifest_from_dict
from runtime.errors import BundleError
from runtime.judging.scope import OUT_OF_SCOPE
from runtime.running.results import read_rows
from tests.runtime.judging.test_scope import _kermany, _non_xrays

FEATURE_WORDS = "unlike the training X-rays in the model's own features"


def _triage(folder: Path, bundle: Path, out: Path) -> dict[str, dict]:
    from runtime.__main__ import main

    assert main(["triage", str(folder), "--bundle", str(bundle), "--out", str(out),
                 "--quiet"]) == 0
    return {row["path"]: row for row in read_rows(out / "results.csv")}


# -- the bundle: second output, manifest block, reference file -------------------------------


def test_every_artifact_returns_features_of_the_declared_width(built_bundles):
    for target, folder in built_bundles.items():
        manifest = read_manifest(folder)
        guard = manifest.scope_guard
        assert guard is not None and guard.output == "features" and guard.dim > 0, target
        # one block per conv block of the model, as its checkpoint builds it
        assert len(guard.blocks) > 1 and sum(guard.blocks) == guard.dim, target
        inputs = np.load(folder / "reference_set.npz")["inputs"][:5]
        for entry in manifest.artifacts:
            bundle = load_bundle(folder, entry.path, device="cpu")
            probabilities, features = bundle.predict_with_features(inputs)
            assert features is not None and features.shape == (5, guard.dim), entry.path
            assert np.allclose(probabilities, bundle.predict(inputs))  # first output unchanged
            rates = guard.artifacts[entry.path]
            assert rates.val_in_scope >= guard.share and rates.limit > 0
            assert bundle.guard is not None and bundle.guard.limit == rates.limit


def test_the_manifest_block_is_validated(cpu_bundle):
    data = json.loads((cpu_bundle / "manifest.json").read_text())
    assert data["scope_guard"]["path"] == SCOPE_REFERENCE
    assert any(f["path"] == SCOPE_REFERENCE for f in data["files"])
    for edit, words in [(lambda g: g.update(share=1.5), "share"),
                        (lambda g: next(iter(g["artifacts"].values())).update(limit=-1.0),
                         "expected a positive distance"),
                        (lambda g: g.update(dim="many"), "dim")]:
        broken = json.loads(json.dumps(data))
        edit(broken["scope_guard"])
        with pytest.raises(ContractError, match=words):
            manifest_from_dict(broken)


def test_a_tampered_reference_or_a_missing_limit_is_refused(cpu_bundle, tmp_path):
    copy = tmp_path / "cpu"
    shutil.copytree(cpu_bundle, copy)
    with np.load(copy / SCOPE_REFERENCE) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["means"] = arrays["means"] + 1.0  # move the training X-rays: everything "in scope"
    np.savez(copy / SCOPE_REFERENCE, **arrays)
    with pytest.raises(BundleError, match=f"{SCOPE_REFERENCE}.*(sha256|bytes)"):
        load_bundle(copy)
    manifest = json.loads((cpu_bundle / "manifest.json").read_text())
    manifest["scope_guard"]["artifacts"].pop(manifest["default_artifact"])
    shutil.copy2(cpu_bundle / SCOPE_REFERENCE, copy / SCOPE_REFERENCE)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="scope guard has no limit for"):
        load_bundle(copy)


def test_a_bundle_without_the_block_still_triages(data_dir, cpu_bundle, tmp_path):
    copy = tmp_path / "cpu"
    shutil.copytree(cpu_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["scope_guard"]
    manifest.pop("population_check", None)  # the rules alone judge the four X-rays below
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert load_bundle(copy).guard is None
    folder = tmp_path / "in"
    folder.mkdir()
    for source in _kermany(data_dir, "kermany_test_224", 2):
        shutil.copy2(source, folder / source.name)
    cv2.imwrite(str(folder / "blank.png"), np.zeros((256, 256), np.uint8))
    rows = _triage(folder, copy, tmp_path / "out")
    assert rows["blank.png"]["scope"] == "out" and "blank" in rows["blank.png"]["scope_reason"]
    xrays = [r for p, r in rows.items() if p.endswith(".jpeg")]
    assert len(xrays) == 4 and all(r["scope"] == "in" for r in xrays)
    assert not any("model's own features" in r["scope_reason"] for r in rows.values())


# -- triage with the guard -------------------------------------------------------------------


@pytest.mark.slow
def test_the_kermany_test_split_stays_in_scope(data_dir, clinical_cpu_bundle, tmp_path):
    """The clinical model, on the files of its own test split; the limit was set on validation,
    the test split is only measured here."""
    rows = _triage(data_dir / "kermany_test_224", clinical_cpu_bundle, tmp_path / "out")
    images = [r for p, r in rows.items() if p.endswith((".jpeg", ".jpg"))]
    assert len(images) == 624 and all(r["status"] == "ok" for r in images)
    inside = sum(r["scope"] == "in" for r in images)
    print(f"\nclinical: kermany_test_224 in scope with the feature guard: {inside}/624")
    # issue 24's goal is 97%; the population check (its limit at 99% of validation) also puts
    # out about 6% of these (docs/population-check.md): this guards against worse
    assert inside / 624 >= 0.90
    assert all("model's own features (distance" in r["scope_reason"]
               for r in images if r["scope"] == "in")
    # within the feature limit (the rules and the population check are not what is compared)
    within = sum(FEATURE_WORDS not in r["scope_reason"] for r in images)
    manifest = read_manifest(clinical_cpu_bundle)
    expected = manifest.scope_guard.artifacts[manifest.default_artifact].test_in_scope
    assert abs(within / 624 - expected) <= 2 / 624  # triage reads the files the build measured


def test_the_tiny_guard_covers_the_squashed_224_rendering(data_dir, cpu_bundle, tmp_path):
    """The tiny model was trained on MedMNIST's centre crops; ``kermany_test_224`` holds the same
    test X-rays squashed to 224 px. Its reference also holds the training X-rays in that
    rendering (the training side of kermany_train_224's patient split) and its limit their
    validation side, so the test files stay in scope; the test folder was never read for it."""
    guard = read_manifest(cpu_bundle).scope_guard
    assert "kermany_train_224" in guard.fitted_on and "kermany_train_224" in guard.limit_set_on
    assert all(rates.val_n > 524 for rates in guard.artifacts.values())  # + the 224 px val side
    rows = _triage(data_dir / "kermany_test_224", cpu_bundle, tmp_path / "out")
    images = [r for p, r in rows.items() if p.endswith(".jpeg")]
    # within the feature limit (the population check's own rate: test_population.py)
    inside = sum(FEATURE_WORDS not in r["scope_reason"] for r in images)
    print(f"\ntiny: kermany_test_224 within the feature guard's limit: {inside}/{len(images)}; in "
          f"scope: {sum(r['scope'] == 'in' for r in images)}")
    assert len(images) == 624 and inside / 624 >= 0.97


def test_triage_agrees_with_the_manifests_test_rate(pneumoniamnist, cpu_bundle, tmp_path):
    """The tiny model, on PneumoniaMNIST's test images as files: triage's in-scope share is the
    one the build measured and wrote into the manifest."""
    test = pneumoniamnist.split("test")
    folder = tmp_path / "in"
    folder.mkdir()
    for i, image in enumerate(test.images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    rows = _triage(folder, cpu_bundle, tmp_path / "out")
    # within the feature limit (the image rules, set on 224 px files, are not what is compared)
    inside = sum(r["status"] == "ok" and FEATURE_WORDS not in r["scope_reason"]
                 for r in rows.values())
    manifest = read_manifest(cpu_bundle)
    expected = manifest.scope_guard.artifacts[manifest.default_artifact].test_in_scope
    print(f"\ntiny: PneumoniaMNIST test in scope: {inside}/{len(rows)} (manifest {expected:.4f})")
    assert len(rows) == 624 and abs(inside / 624 - expected) <= 2 / 624


def _pydicom_corpus(folder: Path) -> int:
    """pydicom's bundled test files, as DICOM and, where they decode, their first frame saved as
    a picture (a CT/MR/US slice exported as an image); returns how many files were written."""
    import pydicom
    from pydicom.data import get_testdata_file

    source = Path(get_testdata_file("CT_small.dcm")).parent
    (folder / "dicom").mkdir(parents=True)
    (folder / "as_png").mkdir()
    written = 0
    for path in sorted(source.glob("*.dcm")):
        shutil.copy2(path, folder / "dicom" / path.name)
        written += 1
        try:
            pixels = np.asarray(pydicom.dcmread(path).pixel_array, np.float64)
        except Exception:  # pydicom cannot decode every test file without extra plugins
            continue
        colour = pixels.ndim >= 3 and pixels.shape[-1] == 3
        while pixels.ndim > (3 if colour else 2):
            pixels = pixels[0]
        if min(pixels.shape[:2]) < 16:
            continue
        lo, hi = pixels.min(), pixels.max()
        image = ((pixels - lo) / (hi - lo or 1) * 255).astype(np.uint8)
        cv2.imwrite(str(folder / "as_png" / f"{path.stem}.png"),
                    image[..., ::-1] if colour else image)
        written += 1
    return written


def _photographs(folder: Path) -> int:
    """matplotlib's and scikit-image's sample pictures (photographs, a retina, a CT phantom, a
    page of text, microscopy ...), as they are and in gray, one subfolder per library (in gray,
    grace_hopper or the retina pass every image rule: only the feature guard catches them)."""
    import skimage
    from matplotlib import cbook

    sources = {"matplotlib": Path(cbook.get_sample_data("grace_hopper.jpg",
                                                        asfileobj=False)).parent,
               "skimage": Path(skimage.data.__file__).parent}
    written = 0
    for name, source in sources.items():
        (folder / name).mkdir(parents=True)
        for path in sorted(p for p in source.glob("*") if p.suffix.lower() in (".jpg", ".png")):
            shutil.copy2(path, folder / name / path.name)
            written += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                cv2.imwrite(str(folder / name / f"{path.stem}_gray.png"),
                            cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
                written += 1
    return written


@pytest.mark.parametrize("which", ["tiny", pytest.param("clinical", marks=pytest.mark.slow)])
def test_non_chest_images_are_out_of_scope_or_errors(data_dir, which, request, tmp_path):
    bundle = request.getfixturevalue("cpu_bundle" if which == "tiny" else "clinical_cpu_bundle")
    folder = tmp_path / "in"
    expected = _non_xrays(data_dir, folder / "synthesised")
    count = len(expected) + _pydicom_corpus(folder / "pydicom") + \
        _photographs(folder / "photographs")
    rows = _triage(folder, bundle, tmp_path / "out")
    assert len(rows) == count
    passed = [p for p, r in rows.items() if r["status"] == "ok" and r["scope"] == "in"]
    assert passed == []
    scored = [r for r in rows.values() if r["status"] == "ok"]
    assert all(r["prediction"] == OUT_OF_SCOPE and r["flagged"] == "1" for r in scored)
    for gray in ("matplotlib/grace_hopper_gray.png", "skimage/retina_gray.png"):
        assert FEATURE_WORDS in rows[f"photographs/{gray}"]["scope_reason"], gray
    by_features = sum(FEATURE_WORDS in r["scope_reason"] for r in scored)
    print(f"\n{which}: {len(rows)} non-chest files: {len(rows) - len(scored)} error rows, "
          f"{len(scored)} out of scope ({by_features} of them by the feature guard)")
