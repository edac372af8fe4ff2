"""A hostile folder and a fuzz corpus made from real X-rays: every file exactly one row, plain
messages, no hang, bounded decode memory."""

from __future__ import annotations

import os
import re
import resource
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.contract.manifest import Preprocessing
from runtime.imaging.limits import MemoryBudget
from runtime.imaging.pool import DecodePool
from runtime.running.triage import Entry, load_one, timed_out, walk
from tests.runtime.imaging import hostile

pytestmark = pytest.mark.timeout(180)
SPEC = Preprocessing()
#: nothing a library would print: object reprs, addresses, tracebacks, install advice
FORBIDDEN = re.compile(r"<[\w.]+ object at|0x[0-9a-f]{6,}|Traceback|pip install|plugin", re.I)


def _load_all(folder: Path, budget: MemoryBudget, workers: int = 2, timeout: float = 30.0):
    entries = list(walk(folder))
    pool = DecodePool(workers, timeout)
    jobs = [pool.submit(load_one, entry, SPEC, SPEC.size * 8, False, budget) for entry in entries]
    loaded = [pool.wait(job, lambda j: timed_out(j.args[0], timeout)) for job in jobs]
    pool.shutdown()
    return entries, loaded


def test_hostile_folder_gives_one_plain_row_per_file(data_dir, tmp_path):
    folder = tmp_path / "hostile"
    expect = hostile.build_corpus(folder, data_dir)
    budget = MemoryBudget(256 * 2**20)
    entries, loaded = _load_all(folder, budget)
    paths = [entry.relative for entry in entries]
    assert len(paths) == len(set(paths))
    assert set(paths) == set(expect), set(paths) ^ set(expect)
    for item in loaded:
        wanted = expect[item.entry.relative]
        if wanted == "ok":
            assert not item.error, (item.entry.relative, item.error)
            assert item.pixels.shape == (SPEC.size, SPEC.size)
        else:
            assert wanted in item.error, (item.entry.relative, item.error)
            assert not FORBIDDEN.search(item.error), item.error
    assert budget.used == 0 and 0 < budget.peak <= budget.total


def test_unlistable_folder_is_an_error_row(tmp_path, monkeypatch):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.txt").write_text("x")
    (tmp_path / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path):
        if os.fsencode(path).endswith(b"locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    entries = list(walk(tmp_path))
    assert [e.relative for e in entries] == ["locked/", "ok/a.txt"]
    assert "folder cannot be listed (permission denied)" in entries[0].error
    assert load_one(entries[0], SPEC, None, False).error == entries[0].error


def test_colliding_display_names_keep_both_rows(tmp_path):
    (tmp_path / "a\\xe9.jpg").write_bytes(b"1")  # a literal backslash in the name
    with open(os.path.join(os.fsencode(tmp_path), b"a\xe9.jpg"), "wb") as handle:
        handle.write(b"2")  # an undecodable byte in the name
    relatives = [entry.relative for entry in walk(tmp_path)]
    assert len(relatives) == 2 and len(set(relatives)) == 2


def test_a_stuck_decode_is_abandoned_and_the_run_goes_on(tmp_path):
    """One job that never ends (within the test) becomes a timeout row; the rest still run."""
    def slow_or_fast(name: str):
        if name == "stuck":
            time.sleep(30)
        return name

    pool = DecodePool(2, timeout=0.5)
    names = ["a", "stuck", "b", "c", "d"]
    jobs = [pool.submit(slow_or_fast, name) for name in names]
    start = time.monotonic()
    results = [pool.wait(job, lambda j: "timed out") for job in jobs]
    assert results == ["a", "timed out", "b", "c", "d"]
    assert time.monotonic() - start < 10 and pool.abandoned == 1
    pool.shutdown()
    entry = Entry(tmp_path / "x.jpg", "x.jpg")
    assert "decoding took longer than 60 s and was abandoned" in timed_out(entry, 60).error


def test_budget_refuses_an_image_larger_than_the_whole_budget(data_dir, tmp_path):
    import cv2

    gray = hostile.xray_gray(data_dir, step=1)
    cv2.imwrite(str(tmp_path / "big.png"), gray.astype(np.uint16) * 257)
    entry = next(walk(tmp_path))
    item = load_one(entry, SPEC, None, False, MemoryBudget(4 * 2**20))
    assert "image too large to decode" in item.error and "decode memory limit" in item.error
    assert load_one(entry, SPEC, None, False, MemoryBudget(256 * 2**20)).error == ""


def _mutations(data: bytes, rng: np.random.Generator, count: int) -> list[bytes]:
    out = []
    for i in range(count):
        buf = bytearray(data)
        kind = i % 4
        if kind == 0:  # bit flips anywhere
            for pos in rng.integers(0, len(buf), int(rng.integers(1, 40))):
                buf[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # truncation
            buf = buf[: int(rng.integers(1, len(buf)))]
        elif kind == 2:  # header edits in the first 512 bytes
            for pos in rng.integers(0, min(512, len(buf)), int(rng.integers(1, 8))):
                buf[pos] = int(rng.integers(0, 256))
        else:  # a block of random bytes inserted
            pos = int(rng.integers(0, len(buf)))
            buf[pos:pos] = rng.bytes(int(rng.integers(1, 256)))
        out.append(bytes(buf))
    return out


def test_fuzzed_xrays_each_get_exactly_one_row(data_dir, tmp_path):
    """Seeded mutations of real X-rays in five formats: one result each, plain messages, no
    hang (pytest-timeout), decode memory within the budget, bounded process memory."""
    import cv2

    gray = hostile.xray_gray(data_dir, step=2)
    sources = {
        "jpg": hostile.xray_jpegs(data_dir)[5].read_bytes(),
        "png": cv2.imencode(".png", gray.astype(np.uint16) * 257)[1].tobytes(),
        "dcm": (data_dir / "dicom" / hostile.CHEST_DICOM).read_bytes(),
        "tif": hostile.tiff_variants(gray[::2, ::2].copy())["gray16_lzma"][0],
        "bmp": hostile.bmp_variants(gray[::2, ::2].copy())["rle8"],
    }
    rng = np.random.default_rng(20261123)
    folder = tmp_path / "fuzz"
    folder.mkdir()
    for suffix, data in sources.items():
        for i, mutated in enumerate(_mutations(data, rng, 40)):
            (folder / f"{suffix}_{i:03d}.{suffix}").write_bytes(mutated)
    budget = MemoryBudget(512 * 2**20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    entries, loaded = _load_all(folder, budget, workers=2, timeout=20.0)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(loaded) == len(entries) == 200
    assert [item.entry.relative for item in loaded] == sorted(p.name for p in folder.iterdir())
    errors = [item.error for item in loaded if item.error]
    for item in loaded:
        if item.error:
            assert not FORBIDDEN.search(item.error), item.error
            assert "unexpected decoder failure" not in item.error, (item.entry.relative,
                                                                   item.detail[-600:])
        else:
            assert item.pixels.shape == (SPEC.size, SPEC.size)
    print(f"\nfuzz: {len(loaded)} files, {len(loaded) - len(errors)} decoded, {len(errors)} "
          f"error rows, budget peak {budget.peak / 2**20:.0f} MiB, max RSS grew {grown_mib:.0f} MiB")
    assert budget.used == 0 and budget.peak <= budget.total
    assert grown_mib < 1024


@pytest.mark.timeout(60)
def test_library_warnings_go_to_the_log_not_the_console(data_dir, tmp_path, capfd):
    """libpng's warning about a damaged ancillary chunk (logged by imagecodecs from inside the
    decoder) lands in the run's log tagged with the file, and the image still decodes."""
    import cv2

    from runtime.imaging.capture import decoding_file, library_output_to
    from runtime.imaging.decode import decode_bytes

    gray = hostile.xray_gray(data_dir)
    png = hostile.png_with_bad_ancillary_crc(cv2.imencode(".png", gray)[1].tobytes())
    log = tmp_path / "decode.log"
    with library_output_to(log), decoding_file("odd.png") as messages:
        pixels = decode_bytes(png, "odd.png", min_side=28).pixels
    assert np.array_equal(pixels, gray)
    assert any("CRC" in message for message in messages)
    assert "odd.png: " in log.read_text() and "CRC" in log.read_text()
    assert "CRC" not in capfd.readouterr().err
