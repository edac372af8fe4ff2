"""The population check scored a batch at a time gives every image the verdict it gets alone.

Triage, serve and Ray make only the check's thumbnail in the decode worker and score the
thumbnails of a whole batch together (:func:`runtime.judging.scope.conclude`); here, on real
X-rays (Kermany children of cxr_samples, adults of both adult_cxr sources, DICOMs with and
without a patient age), with a built bundle's check on both engines it runs on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from runtime.bundle.load import load_bundle
from runtime.imaging.decode import decode_file
from runtime.judging.population import thumbnail
from runtime.judging.scope import assess, assess_rules, conclude
from runtime.running.triage import (
    DEFAULT_OVERSAMPLE,
    Entry,
    conclude_scopes,
    load_one,
    reduce_to_for,
)

WORDS = "looks like an adult chest X-ray"


def _xrays(data_dir: Path) -> list[Path]:
    children = sorted((data_dir / "cxr_samples").rglob("*.jpeg"))[::10]
    adults = [sorted((data_dir / "adult_cxr" / source).glob("*.jpeg"))[::20]
              for source in ("nih", "hannover")]
    return children + adults[0] + adults[1]


@pytest.fixture(scope="module")
def bundle(cpu_bundle):
    return load_bundle(cpu_bundle)


@pytest.fixture(scope="module")
def decoded(data_dir, bundle):
    reduce_to = reduce_to_for(bundle.preprocessing, DEFAULT_OVERSAMPLE)
    return [decode_file(p, reduce_to=reduce_to) for p in _xrays(data_dir)]


@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
def test_batched_verdicts_equal_per_image_verdicts(bundle, decoded, engine):
    check = dataclasses.replace(bundle.population_check, engine=engine)
    alone = [check.judge(d.pixels) for d in decoded]
    thumbs = np.stack([thumbnail(d.pixels) for d in decoded])
    for size in (7, 32, len(thumbs)):
        batched = [v for i in range(0, len(thumbs), size)
                   for v in check.verdicts(thumbs[i:i + size])]
        assert batched == alone, size
    # both verdicts occur: the adults are out in the check's words, most children in
    outside = sum(v is not None for v in alone)
    assert outside >= 40 and sum(WORDS in (v or "") for v in alone) == outside
    assert len(alone) - outside >= 30


def test_conclude_gives_assess_verdicts_rules_and_dicom_age_kept(bundle, decoded, data_dir,
                                                                 tmp_path):
    import pydicom

    check = bundle.population_check
    source = data_dir / "dicom" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    dataset = pydicom.dcmread(source)
    dataset.PatientAge = "062Y"  # an adult: the age rule decides, the check is not asked
    dataset.save_as(tmp_path / "adult.dcm")
    del dataset.PatientAge
    dataset.save_as(tmp_path / "no_age.dcm")
    inverted = dataclasses.replace(decoded[0], pixels=255 - decoded[0].pixels)  # a rule fires
    images = decoded + [decode_file(tmp_path / "adult.dcm"), decode_file(tmp_path / "no_age.dcm"),
                        inverted]
    pending = [assess_rules(d, bundle.population, check) for d in images]
    assert pending[-3].check_thumbnail is None and pending[-2].check_thumbnail is not None
    scopes = conclude(pending, check)
    assert scopes == [assess(d, bundle.population, check) for d in images]
    adult, no_age, inverted_scope = scopes[-3:]
    assert not adult.inside and "patient age 62Y" in adult.reason and WORDS not in adult.reason
    assert not no_age.inside and WORDS in no_age.reason
    assert "inverted gray scale" in inverted_scope.reason
    with pytest.raises(ValueError, match="no check"):
        conclude(pending, None)


def test_load_one_leaves_the_check_to_the_batch(bundle, data_dir):
    spec = bundle.preprocessing
    reduce_to = reduce_to_for(spec, DEFAULT_OVERSAMPLE)
    paths = _xrays(data_dir)[::4]
    items = [load_one(Entry(p, p.name), spec, reduce_to, False, None, bundle.population,
                      bundle.population_check) for p in paths]
    assert all(item.scope is None and item.pending is not None for item in items)
    conclude_scopes(items, bundle.population_check)
    expected = [assess(decode_file(p, reduce_to=reduce_to), bundle.population,
                       bundle.population_check) for p in paths]
    assert [item.scope for item in items] == expected and all(i.pending is None for i in items)
    assert any(not s.inside for s in expected) and any(s.inside for s in expected)
    # without a check the scope is judged in the worker, as before
    alone = load_one(Entry(paths[0], paths[0].name), spec, reduce_to, False)
    assert alone.scope == assess(decode_file(paths[0], reduce_to=reduce_to)) and not alone.pending
