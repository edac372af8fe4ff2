"""The scope rules' thumbnail is made once when it is the model's input (a whole-image area
resize to 128 px of a full decode: the clinical model's preprocessing), on real X-rays."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from runtime.contract.manifest import Preprocessing
from runtime.imaging.decode import decode_file
from runtime.judging.scope import THUMB, assess, image_stats
from runtime.running.triage import Entry, is_scope_thumbnail, load_one

WHOLE_128 = Preprocessing.from_dict({"size": THUMB, "crop": "none", "interpolation": "area",
                                     "scale": 1 / 255, "mean": [0.5], "std": [0.5],
                                     "channels": 1})


def _xrays(data_dir):
    paths = sorted((data_dir / "cxr_samples").rglob("*.jpeg"))
    return paths[::70] + sorted((data_dir / "adult_cxr").rglob("*.jpeg"))[::200]


def test_shared_thumbnail_gives_the_same_scope_and_pixels(data_dir):
    shared = 0
    for path in _xrays(data_dir):
        for reduce_to in (None, 3 * THUMB):
            loaded = load_one(Entry(path, path.name), WHOLE_128, reduce_to, False)
            decoded = decode_file(path, min_side=THUMB, reduce_to=reduce_to)
            assert not loaded.error
            assert loaded.scope == assess(decoded)
            shared += is_scope_thumbnail(WHOLE_128, decoded, False)
            if is_scope_thumbnail(WHOLE_128, decoded, False):
                assert image_stats(decoded.pixels, loaded.pixels) == image_stats(decoded.pixels)
    assert shared >= len(_xrays(data_dir))  # every full decode shared its thumbnail


def test_thumbnail_is_shared_only_when_it_is_the_model_input(data_dir):
    decoded = decode_file(_xrays(data_dir)[0], min_side=THUMB)
    assert is_scope_thumbnail(WHOLE_128, decoded, False)
    assert not is_scope_thumbnail(WHOLE_128, decoded, True)  # GPU windows: no pixels made
    assert not is_scope_thumbnail(replace(WHOLE_128, crop="center-square"), decoded, False)
    assert not is_scope_thumbnail(replace(WHOLE_128, size=28), decoded, False)
    assert not is_scope_thumbnail(replace(WHOLE_128, interpolation="linear"), decoded, False)
    reduced = decode_file(_xrays(data_dir)[0], min_side=THUMB, reduce_to=THUMB)
    assert reduced.reduction > 1 and not is_scope_thumbnail(WHOLE_128, reduced, False)
    with pytest.raises(ValueError, match="128x128"):
        image_stats(decoded.pixels, np.zeros((28, 28), np.uint8))
