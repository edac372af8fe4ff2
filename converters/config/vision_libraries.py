"""Import torchvision (and what imports it: timm, torchxrayvision) beside a CPU-only torch.

PyPI's torchvision wheels for x86-64 Linux are CUDA builds: their C++ operators (``nms``,
``roi_align``, ... detection only) link ``libtorch_cuda.so``, which a CPU-only torch (the kit's
``torch==2.13.0+cpu``) lacks, so they cannot load. torchvision then registers a fake kernel for
``torchvision::nms`` on an operator nobody defined, and ``import torchvision`` fails with
"operator torchvision::nms does not exist". The classification networks the kit builds never call
those operators, so when, and only when, that is the failure, the two schemas are declared (no
kernel: calling them still fails) and the import is retried. ``build --config`` says so.
"""

from __future__ import annotations

import importlib
import logging
import sys
from types import ModuleType

log = logging.getLogger(__name__)

#: the operators torchvision registers fake kernels for without checking that its C++ part loaded
UNGUARDED_OPERATORS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                       "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_declared: list = []  # the torch.library.Library holding the schemas: alive for the process


def import_vision(name: str) -> ModuleType:
    """``importlib.import_module(name)`` for torchvision/timm/torchxrayvision, CPU torch or not."""
    try:
        return importlib.import_module(name)
    except RuntimeError as exc:
        if "torchvision::" not in str(exc) or _declared:
            raise
        log.warning("torchvision's C++ operators do not load with this torch (%s): a CUDA build of "
                    "torchvision beside a CPU-only torch. Declaring the detection operators it "
                    "needs at import; classification networks do not use them.", exc)
        _declare_operators()
        return importlib.import_module(name)


def _declare_operators() -> None:
    import torch

    for module in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[module]  # a half-imported torchvision is retried from the start
    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in UNGUARDED_OPERATORS:
        library.define(schema)
    _declared.append(library)
