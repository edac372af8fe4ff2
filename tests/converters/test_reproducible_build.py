"""The same bundle twice: two builds from the same checkpoint, data and library versions on one
machine choose the same default and INT8 variant, record the same metrics, and write the same
bytes, except where docs/building-bundles.md ("The same bundle twice") says why not."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.contract.manifest import load_manifest, to_dict

pytestmark = pytest.mark.slow  # a second build of the cpu and arm targets (~30 s on 2 cores)

#: timings and the moment of the build: recorded, never used to choose
VOLATILE = {"speed", "seconds", "built_at", "load_average", "command"}
#: ONNX Runtime's ORT-format writer orders some flatbuffer parts differently from run to run and
#: lists the operator domains registered in the process (onnxruntime-extensions adds two), so its
#: size may differ too (same answers); report.md and manifest.json carry the timings above
NOT_BYTE_IDENTICAL = {"model.int8.ort", "report.md"}


def _stable(value):
    """The manifest without its volatile parts and the checksums of NOT_BYTE_IDENTICAL files."""
    if isinstance(value, dict):
        if value.get("path") in NOT_BYTE_IDENTICAL:
            value = {k: v for k, v in value.items()
                     if k not in ("sha256", "bytes", "total_bytes", "files")}
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in _differences(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def test_two_builds_choose_and_write_the_same(built_bundles, data_dir, tmp_path, monkeypatch):
    from converters.build import build_from_config
    from tests.conftest import REFERENCE_CONFIG

    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))  # the config's ${CXR_DATA_DIR}
    again = build_from_config(["cpu", "arm"], REFERENCE_CONFIG, tmp_path / "dist",
                              progress=False)
    for second in again:
        first = built_bundles[second.name]
        one, two = load_manifest(first), load_manifest(second)
        assert two.default_artifact == one.default_artifact, second.name
        for a, b in zip(one.artifacts, two.artifacts, strict=True):
            assert (b.path, b.format, b.conversion) == (a.path, a.format, a.conversion)
            assert b.build.attempts[-1].level == a.build.attempts[-1].level  # the same variant
            assert (b.metrics, b.parity, b.gate) == (a.metrics, a.parity, a.gate)
        assert two.threshold == one.threshold and two.reference.metrics == one.reference.metrics
        assert _differences(_stable(to_dict(one)), _stable(to_dict(two))) == []
        for path in sorted(p.name for p in Path(first).iterdir() if p.is_file()):
            if path in NOT_BYTE_IDENTICAL or path == "manifest.json":
                continue
            assert (second / path).read_bytes() == (first / path).read_bytes(), path
