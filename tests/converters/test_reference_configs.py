"""The reference models are configs like any other model's: ``python -m converters build``
builds ``models/reference/model.toml`` (``--model clinical``: ``models/clinical/model.toml``),
and the bundle it writes holds the same choices and figures as a build from the kit-trained
checkpoint itself (``--checkpoint``), down to the scope guard's and the population check's."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.__main__ import main
from runtime.contract.manifest import load_manifest
from tests.conftest import REFERENCE_CONFIG

#: what a build chooses and measures; the rest (file bytes, timings, provenance) may differ
SAME = ("threshold", "finding_thresholds", "default_artifact")


@pytest.mark.slow
def test_a_checkpoint_build_equals_the_config_build(tmp_path: Path, built_bundles, data_dir,
                                                    reference_checkpoint, capsys):
    from_config = load_manifest(built_bundles["gpu"])
    assert from_config.provenance.model_config == str(REFERENCE_CONFIG)
    assert main(["build", "--target", "gpu", "--checkpoint", str(reference_checkpoint),
                 "--data", str(data_dir), "--out", str(tmp_path), "--quiet"]) == 0
    from_checkpoint = load_manifest(tmp_path / "gpu")
    assert from_checkpoint.provenance.dataset == "pneumoniamnist"
    for key in SAME:
        assert getattr(from_config, key) == getattr(from_checkpoint, key), key
    assert from_config.reference.metrics == from_checkpoint.reference.metrics
    assert [(a.path, a.metrics, a.parity.max_abs_diff, a.gate.status)
            for a in from_config.artifacts] == \
        [(a.path, a.metrics, a.parity.max_abs_diff, a.gate.status)
         for a in from_checkpoint.artifacts]
    guard, same_guard = from_config.scope_guard, from_checkpoint.scope_guard
    assert guard is not None and same_guard is not None
    assert (guard.blocks, guard.fitted_on, guard.artifacts, guard.sha256) == \
        (same_guard.blocks, same_guard.fitted_on, same_guard.artifacts, same_guard.sha256)
    assert from_config.population_check == from_checkpoint.population_check


def test_the_default_build_is_the_reference_config(tmp_path: Path, capsys):
    """Without --config or --checkpoint the build reads models/<folder>/model.toml, with --data
    as its ${CXR_DATA_DIR}: here a folder without the data, which the error names."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for model, folder in ((None, "reference"), ("clinical", "clinical"),
                          ("pneumonia_type", "pneumonia_type")):
        chosen = ["--model", model] if model else []
        assert main(["build", "--target", "cpu", *chosen, "--data", str(empty),
                     "--out", str(tmp_path / "dist")]) == 2
        err = capsys.readouterr().err
        assert f"models/{folder}/model.toml: [data] val" in err and str(empty) in err, err
        assert not (tmp_path / "dist" / "cpu").exists()


def test_config_and_model_together_are_refused(capsys):
    assert main(["build", "--target", "cpu", "--model", "clinical",
                 "--config", str(REFERENCE_CONFIG)]) == 2
    assert "leave out --checkpoint and --model" in capsys.readouterr().err
