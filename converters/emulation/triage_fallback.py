"""A minimal triage run built from the kit's own runtime modules, for the emulated verification.

Used when ``python -m runtime triage`` is not available (or when an engine other than the one the
manifest names is checked, e.g. OpenVINO on an ONNX artifact). It is run as a script, on the host
and inside the aarch64 chroot alike, never imported by ``targets``: it decodes with
``runtime.decode`` (or OpenCV), preprocesses with ``runtime.preprocess`` and runs the artifact
with ``runtime.engines``, and writes ``results.csv`` with the triage CLI's columns.

    python triage_fallback.py FOLDER --bundle B --artifact A [--engine E] --out DIR
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

COLUMNS = ("path", "status", "prediction", "probability", "flagged", "latency_ms", "error")
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm"}


def _decode(path: Path, min_side: int):
    try:
        from runtime.decode import decode_file
    except ImportError:
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ValueError("cannot be decoded")
        return image
    return decode_file(path, min_side=min_side).pixels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--engine", help="override the manifest's engine (onnxruntime|openvino)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from runtime.bundle import BundleError, placement_of, read_manifest, verify_artifact
    from runtime.engines import create_engine
    from runtime.formats import Placement
    from runtime.preprocess import normalize, to_model_pixels

    manifest = read_manifest(args.bundle)
    listed = {a.path: a for a in manifest.artifacts}
    art = listed.get(args.artifact)
    path = args.bundle / args.artifact
    if art is not None:
        try:
            verify_artifact(args.bundle, art)
        except BundleError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 2
    spec = manifest.preprocessing
    classes = manifest.model.classes
    positive = manifest.model.positive_index
    negative = classes[1 - positive] if len(classes) == 2 else ""
    threshold = manifest.threshold
    engine_name = args.engine or (art.engine if art else "onnxruntime")
    placement = placement_of(args.bundle, art) if art and art.engine == engine_name else \
        Placement(providers=("CPUExecutionProvider",), device="CPU", precision_hint="f32")
    engine = create_engine(path, engine_name, placement)
    print(f"engine {engine_name}: {engine.active} precision {engine.precision}", file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    with open(args.out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for file in files:
            started = time.perf_counter()
            row = {"path": str(file.relative_to(args.folder)), "status": "ok", "prediction": "",
                   "probability": "", "flagged": "", "latency_ms": "", "error": ""}
            try:
                pixels = to_model_pixels(_decode(file, spec.size), spec)
                prob = float(engine.run(normalize(pixels[None], spec))[0, positive])
                flagged = prob >= threshold
                row.update(prediction=classes[positive] if flagged else negative,
                           probability=f"{prob:.8f}", flagged=str(flagged).lower())
            except Exception as exc:  # one bad file is one error row
                row.update(status="error", error=f"{type(exc).__name__}: {exc}")
            row["latency_ms"] = f"{(time.perf_counter() - started) * 1000:.2f}"
            writer.writerow(row)
            handle.flush()
    print(f"wrote {len(files)} rows to {args.out / 'results.csv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the kit's root, for runtime
    sys.exit(main())
