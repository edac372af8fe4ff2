"""One converter module per artifact format; the format table (runtime/formats.py) names them.

A converter is ``convert(job: ConvertJob) -> dict`` (what it did, recorded in the manifest's
``conversion``); a module may declare ``LEVELS``: escalation steps the build tries in order when
the clinical gate fails (e.g. keep more layers in float). The build resolves a row's
``"package.module:function"`` with :func:`resolve`, so nothing imports a converter it does not use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class ConvertJob:
    """Everything a converter may use: the build workspace, options, level, destination."""

    workspace: Any  # converters.build.Workspace: fp32_onnx(), calibration, metadata(), val, ...
    dest: Path
    level: str = "default"
    options: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None  # the file of the row's ``source`` format, when it has one


Converter = Callable[[ConvertJob], dict]


def resolve(dotted: str) -> tuple[Converter, tuple[str, ...]]:
    """``"package.module:function"`` -> (the function, its module's LEVELS or ("default",))."""
    module_name, _, name = dotted.partition(":")
    module = importlib.import_module(module_name)
    try:
        fn = getattr(module, name)
    except AttributeError:
        raise ImportError(f"converter {dotted!r}: {module_name} has no {name!r}") from None
    return fn, tuple(getattr(module, "LEVELS", ("default",)))
