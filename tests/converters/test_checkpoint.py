"""Pickle-free checkpoints: round trip, and clear errors for bad files."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from converters.architectures import build_model
from converters.checkpoint import CheckpointError, ModelSpec, load_checkpoint, save_checkpoint
from runtime.contract.manifest import Preprocessing


def _spec(width: int = 8) -> ModelSpec:
    return ModelSpec(architecture="pneumonia_cnn", config={"width": width, "num_classes": 2},
                     preprocessing=Preprocessing(size=28))


def test_round_trip_keeps_weights_and_spec(tmp_path):
    torch.manual_seed(0)
    model = build_model("pneumonia_cnn", width=8, num_classes=2).eval()
    path = save_checkpoint(model, _spec(), tmp_path / "m.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.spec == _spec()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_corrupt_checkpoint(tmp_path, reference_checkpoint):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(reference_checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_architecture_mismatch(tmp_path):
    model = build_model("pneumonia_cnn", width=8, num_classes=2)
    path = save_checkpoint(model, _spec(width=16), tmp_path / "lie.safetensors")
    with pytest.raises(CheckpointError, match="do not match architecture 'pneumonia_cnn'"):
        load_checkpoint(path)


def test_unknown_architecture(tmp_path):
    model = build_model("pneumonia_cnn", width=8, num_classes=2)
    spec = ModelSpec(architecture="no_such_net", config={})
    path = save_checkpoint(model, spec, tmp_path / "unknown.safetensors")
    with pytest.raises(CheckpointError, match="no_such_net"):
        load_checkpoint(path)


def test_plain_safetensors_without_kit_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a kit checkpoint"):
        load_checkpoint(path)


def test_metadata_round_trips_as_json():
    meta = _spec().to_metadata()
    assert json.loads(meta["preprocessing"])["size"] == 28
    assert ModelSpec.from_metadata(meta, source=None) == _spec()  # type: ignore[arg-type]


def test_ensemble_round_trip_is_one_model(tmp_path):
    member = {"architecture": "pneumonia_cnn", "config": {"width": 4, "num_classes": 2}}
    spec = ModelSpec(architecture="ensemble", config={"members": [member, member], "num_classes": 2})
    torch.manual_seed(1)
    model = build_model("ensemble", **spec.config).eval()
    loaded = load_checkpoint(save_checkpoint(model, spec, tmp_path / "ens.safetensors"))
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in model.members]).mean(0)
        assert torch.allclose(loaded.model(x), expected)
    assert len(loaded.model.members) == 2


def _header(raw: bytes) -> tuple[int, dict]:
    size = int.from_bytes(raw[:8], "little")
    return size, json.loads(raw[8:8 + size])


def test_saved_bytes_do_not_depend_on_the_metadata_order(tmp_path):
    """safetensors writes metadata keys in a per-process order; the kit sorts the header, so the
    same weights and metadata give the same file (the shipped clinical checkpoint included)."""
    from converters.checkpoint import canonical_header
    from converters.clinical import CLINICAL_CHECKPOINT

    shipped = CLINICAL_CHECKPOINT.read_bytes()
    size, header = _header(shipped)
    assert list(header) == sorted(header)
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
    shuffled = dict(reversed(list(header.items())))
    shuffled["__metadata__"] = dict(reversed(list(header["__metadata__"].items())))
    text = json.dumps(shuffled, separators=(",", ":")).encode().ljust(size, b" ")
    path = tmp_path / "shuffled.safetensors"
    path.write_bytes(shipped[:8] + text + shipped[8 + size:])
    assert path.read_bytes() != shipped and load_checkpoint(path).spec == \
        load_checkpoint(CLINICAL_CHECKPOINT).spec
    assert canonical_header(path) is True
    assert path.read_bytes() == shipped
    assert canonical_header(path) is False  # already canonical: untouched
    saved = save_checkpoint(build_model("pneumonia_cnn", width=8, num_classes=2), _spec(),
                            tmp_path / "m.safetensors")
    assert canonical_header(saved) is False
