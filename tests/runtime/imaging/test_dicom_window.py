"""The values and window a viewer's window/level starts from (runtime.imaging.dicom.window_values,
apply_window), checked against the runtime's own display pipeline on the real DICOMs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest

from runtime.errors import DecodeError
from runtime.imaging.decode import decode_bytes, read_bytes
from runtime.imaging.dicom import apply_window, window_values


@pytest.mark.parametrize("name", ["1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
                                  "Fake_MONOHR1.dcm"])
def test_default_window_shows_what_the_decoder_shows(data_dir: Path, name: str):
    data = read_bytes(data_dir / "dicom" / name)
    values = window_values(data)
    assert values.values.shape == (1024, 1024) and values.invert == name.startswith("Fake")
    shown = apply_window(values.values, values.center, values.width, values.invert)
    assert np.abs(shown.astype(int) - decode_bytes(data, name).pixels.astype(int)).max() <= 4


def test_the_header_window_is_the_starting_window(data_dir: Path):
    ds = pydicom.dcmread(data_dir / "dicom" /
                         "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm")
    ds.WindowCenter, ds.WindowWidth = [90, 128], [60, 256]  # two windows: the first is the default
    buffer = io.BytesIO()
    ds.save_as(buffer)
    data = buffer.getvalue()
    values = window_values(data)
    assert (values.center, values.width) == (90.0, 60.0)
    shown = apply_window(values.values, values.center, values.width, values.invert)
    decoded = decode_bytes(data, "windowed.dcm").pixels  # pydicom's VOI step, stretched to 8 bits
    assert np.corrcoef(shown.ravel(), decoded.ravel())[0, 1] > 0.99
    assert (apply_window(values.values, 90, 20, False) == 255).sum() > (shown == 255).sum()


def test_a_file_that_is_not_dicom_is_refused_in_plain_words(data_dir: Path):
    jpeg = read_bytes(next((data_dir / "cxr_samples" / "NORMAL").glob("*.jpeg")))
    with pytest.raises(DecodeError, match="DICOM"):
        window_values(jpeg)
