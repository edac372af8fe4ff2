"""Write the examples' networks with random weights (never committed: large, and not trained).

``python examples/make_weights.py OUT`` writes ``OUT/<example>/``: a copy of the example's
``model.toml`` and the weights file it names, so that ``python -m converters config --check
OUT/<example>/model.toml --load`` runs. Nothing is downloaded; the weights are seeded.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Callable

import torch

HERE = Path(__file__).resolve().parent


def densenet121(folder: Path) -> Path:
    """torchvision DenseNet-121, two classes, 3-channel input (random, seed 0)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None, num_classes=2)
    path = folder / "densenet121.pt"
    torch.save(model.state_dict(), path)
    return path


#: each example's folder under examples/ and the function that writes its weights
EXAMPLES: dict[str, Callable[[Path], Path]] = {"densenet121": densenet121}


def make(out: Path, names: list[str] | None = None) -> list[Path]:
    """Write each example (default: all) into ``out``; the configs written."""
    configs = []
    for name in names or list(EXAMPLES):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        config = Path(shutil.copy(HERE / name / "model.toml", folder / "model.toml"))
        EXAMPLES[name](folder)
        configs.append(config)
    return configs


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2 or any(name not in EXAMPLES for name in argv[1:]):
        print(f"usage: python examples/make_weights.py OUT [{'|'.join(EXAMPLES)}]",
              file=sys.stderr)
        return 2
    for config in make(Path(argv[0]), argv[1:] or None):
        print(f"wrote {config.parent}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
