"""The one labelled-image type, and a folder of labelled files with a manifest, on real X-rays."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from converters.data.folder import folder_images, read_folder_manifest
from converters.data.kermany import TEST_FOLDER
from converters.data.labelled import DatasetError
from runtime.contract.manifest import Preprocessing
from runtime.imaging.decode import decode_file
from runtime.preprocess.cpu import prepare_batch, to_model_pixels

TINY = Preprocessing()  # 28 px, the npz's own size
WIDER = Preprocessing(size=64, interpolation="linear")


def test_at_a_model_size_is_the_runtimes_crop_resize_and_normalisation(pneumoniamnist):
    val = pneumoniamnist.val
    wider = val.at(WIDER)
    assert wider.images.shape == (len(val), 64, 64) and wider.at(WIDER) is wider
    assert np.array_equal(wider.inputs, prepare_batch(val.images, WIDER))
    assert np.array_equal(val.at(TINY).images, val.images)  # already at 28 px: untouched
    with pytest.raises(ValueError, match="not at a model's pixels"):
        val.inputs  # noqa: B018
    with pytest.raises(ValueError, match="already at"):
        wider.at(TINY)


def _folder(data_dir, tmp_path, header: str, rows: list[str]):
    """Four real Kermany test X-rays (two of each class) copied into a folder with a manifest."""
    source = data_dir / TEST_FOLDER
    picked = [sorted((source / c).glob("*.jpeg"))[:2] for c in ("NORMAL", "PNEUMONIA")]
    files = [f for pair in picked for f in pair]
    folder = tmp_path / "site_xrays"
    folder.mkdir()
    for file in files:
        shutil.copy(file, folder / file.name)
    lines = [header] + [row.format(name=f.name, label=f.parent.name) for f, row in zip(files, rows)]
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder, files


def test_a_folder_with_a_manifest_loads_as_labelled_images(data_dir, tmp_path):
    folder, files = _folder(data_dir, tmp_path, "path,label", ["{name},{label}"] * 4)
    manifest = read_folder_manifest(folder)
    images = folder_images(manifest, TINY)
    expected = np.stack([to_model_pixels(decode_file(f).pixels, TINY) for f in files])
    assert np.array_equal(images.images, expected)  # what runtime triage decodes
    assert images.labels.tolist() == [0, 0, 1, 1] and images.groups is None
    assert images.source == f"site_xrays (manifest md5 {manifest.md5})"
    assert images.inputs.shape == (4, 1, 28, 28)


def test_take_keeps_images_labels_and_patients_together(data_dir, tmp_path):
    rows = ["{name},{label},a", "{name},{label},b", "{name},{label},c", "{name},{label},"]
    folder, files = _folder(data_dir, tmp_path, "path,label,patient", rows)
    images = folder_images(read_folder_manifest(folder), TINY)
    assert images.groups == ("a", "b", "c", files[3].name)  # a blank patient: its own group
    picked = images.take(np.array([3, 0]), "two of them")
    assert picked.groups == (files[3].name, "a") and picked.labels.tolist() == [1, 0]
    assert np.array_equal(picked.images, images.images[[3, 0]]) and picked.source == "two of them"


def test_a_manifest_with_an_unknown_label_or_a_missing_file_is_refused(data_dir, tmp_path):
    rows = ["{name},{label}"] * 3 + ["{name},COVID"]
    folder, files = _folder(data_dir, tmp_path, "path,label", rows)
    with pytest.raises(DatasetError, match="unknown label 'COVID'"):
        read_folder_manifest(folder)
    (folder / "manifest.csv").write_text(f"path,label\n{files[0].name},NORMAL\ngone.jpeg,NORMAL\n")
    with pytest.raises(DatasetError, match="1 listed file.*missing.*gone.jpeg"):
        read_folder_manifest(folder)
