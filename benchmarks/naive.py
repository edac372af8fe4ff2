"""The naive baseline: what a programmer writes without the kit, run as a whole process.

Pillow opens each image, converts it to grayscale, takes the centre square and resizes it
(bilinear, Pillow's antialiased downscale) to the model input; batches of 32 go through the PyTorch
FP32 model of the checkpoint; one probability per file is written as CSV. No checks, no scope, no
reduced decode, one thread of Python.

    python -m benchmarks.naive FOLDER --checkpoint models/clinical/clinical_cnn.safetensors --out p.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BATCH = 32


def naive_probabilities(files: list[Path], checkpoint: Path) -> list[float]:
    """The naive loop: Pillow, grayscale, centre square, resize, PyTorch FP32 in batches of 32
    (torch and the converters are imported here only)."""
    import numpy as np
    import torch
    from PIL import Image

    from converters.architectures import WithSoftmax
    from converters.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    model = WithSoftmax(loaded.model).eval()
    spec = loaded.spec.preprocessing
    mean = np.asarray(spec.per_channel("mean"), np.float32)[:, None, None]
    std = np.asarray(spec.per_channel("std"), np.float32)[:, None, None]

    def pixels(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            gray = image.convert("L")
        top, left, height, width = spec.crop_box(gray.height, gray.width)
        small = gray.crop((left, top, left + width, top + height)).resize(
            (spec.width, spec.height), Image.BILINEAR)
        x = np.asarray(small, np.float32)[None] * np.float32(spec.scale)
        return (np.repeat(x, spec.channels, axis=0) - mean) / std

    out: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(files), BATCH):
            batch = torch.from_numpy(np.stack([pixels(p) for p in files[start:start + BATCH]]))
            out += model(batch)[:, loaded.spec.positive_index].tolist()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="image folder (searched recursively)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a .safetensors checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="CSV of file,probability")
    args = parser.parse_args(argv)
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
    if not files:
        print(f"naive: no JPEGs under {args.folder}", file=sys.stderr)
        return 1
    rows = [f"{p},{q:.6f}" for p, q in zip(files, naive_probabilities(files, args.checkpoint))]
    args.out.write_text("file,probability\n" + "\n".join(rows) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} probabilities to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
