"""Model configs written as real files for the tests: a valid base (the clinical model's network,
real X-ray folders) and a way to change any key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CLINICAL_WEIGHTS = REPO / "models" / "clinical" / "clinical_cnn.safetensors"
CLINICAL_KWARGS = {"name": "clinical_cnn", "width": 12, "depths": [1, 2, 2, 2], "dropout": 0.2,
                   "num_classes": 2, "temperature": 0.508119}
DELETE = object()


def base() -> dict[str, Any]:
    """A valid config (as parsed TOML): the clinical network, real X-rays as class folders."""
    return {
        "name": "test-model",
        "network": {"factory": "converters.architectures:build_model",
                    "kwargs": dict(CLINICAL_KWARGS), "weights": str(CLINICAL_WEIGHTS)},
        "input": {"channels": 1, "size": 128, "crop": "none", "interpolation": "area",
                  "scale": 1 / 255, "mean": [0.5], "std": [0.5]},
        "output": {"kind": "logits", "task": "multiclass", "labels": ["NORMAL", "PNEUMONIA"],
                   "findings": ["PNEUMONIA"], "sensitivity": 0.98},
        "population": {"age_years": [1, 5], "views": ["PA", "AP"]},
        "data": {"val": "${CXR_DATA_DIR}/cxr_samples",
                 "test": "${CXR_DATA_DIR}/kermany_test_224"},
    }


def changed(config: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``config`` with ``section__key=value`` (or ``key=value`` at the top) changed; DELETE
    removes a key."""
    out = copy.deepcopy(config)
    for dotted, value in changes.items():
        *sections, key = dotted.split("__")
        table = out
        for section in sections:
            table = table.setdefault(section, {})
        if value is DELETE:
            table.pop(key, None)
        else:
            table[key] = value
    return out


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"


def to_toml(config: dict[str, Any]) -> str:
    """TOML text of ``config``: scalars at the top, then one section per table."""
    lines = [f"{k} = {toml_value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for section, table in config.items():
        if isinstance(table, dict):
            lines += [f"[{section}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write(folder: Path, config: dict[str, Any], text: str | None = None) -> Path:
    """``folder/model.toml`` holding ``config`` (or ``text`` as it is)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.toml"
    path.write_text(to_toml(config) if text is None else text, encoding="utf-8")
    return path
