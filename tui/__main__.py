"""Chest X-ray triage app for clinic staff: keyboard first (mouse works too), offline.

    1 Triage   pick a folder of X-rays and a model, run, read the flagged cases first;
               v reviews them one at a time (confirm / overrule / unsure, notes, undo)
    2 Reports  benchmark tables per hardware target (python -m benchmarks run makes them)
    3 Bundle   what the chosen model is, its threshold in plain words, sha256 check
    4 Listener the queue of a DICOM listener (python -m runtime listen): received, triaged,
               flagged, SRs waiting to be sent, failed sends with the reason (read every 3 s)

Results go to ./results/<folder>-<target>-<format>-<precision>/results.csv (never inside the
input folder); running again into the same folder resumes. The doctor's decisions go to
review.csv in the same folder; --review RESULTS (or o in the app) reopens a review where it stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# as in runtime/__main__.py: one BLAS thread per decoding thread (set before numpy is imported)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tui", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, metavar="FOLDER",
                        help="folder of X-rays to open (JPEG, PNG, BMP, TIFF, DICOM; "
                             "subfolders included); you can also pick one in the app")
    parser.add_argument("--bundle", type=Path, action="append", default=[], metavar="PATH",
                        help="bundle folder with manifest.json, offered first (repeatable); "
                             "bundles in ./dist/*/ are always offered")
    parser.add_argument("--artifact", default=None,
                        help="artifact of that bundle to select, e.g. model.int8.onnx or "
                             "onnx-int8 (default: the bundle's default)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: results/<folder>-<target>-<format>-"
                             "<precision>)")
    parser.add_argument("--review", type=Path, default=None, metavar="RESULTS",
                        help="open the review of an earlier run's results folder (the one "
                             "holding results.csv); it resumes at the first undecided case")
    parser.add_argument("--listener", type=Path, default=None, metavar="DIR",
                        help="the --out folder of a DICOM listener (python -m runtime listen) "
                             "to show in screen 4; you can also open one there with o")
    parser.add_argument("--report", type=Path, default=None,
                        help="benchmark report.json to show (default: "
                             "benchmarks/reports/report.json)")
    parser.add_argument("--batch", type=int, default=32, help="images per model call (default 32)")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding threads (default: CPU count, at most 4)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.folder is not None and not args.folder.is_dir():
        parser.error(f"FOLDER {args.folder} is not a folder")
    from runtime.bundle.artifacts import read_manifest
    from runtime.errors import BundleError

    for bundle in args.bundle:
        try:
            read_manifest(bundle)
        except BundleError as exc:
            parser.error(str(exc))
    if args.review is not None and not (args.review / "results.csv").is_file():
        parser.error(f"--review {args.review} holds no results.csv: give the results folder of "
                     "a triage run")
    from tui.listener import is_listener_folder

    if args.listener is not None and not is_listener_folder(args.listener):
        parser.error(f"--listener {args.listener} is not a listener folder (no spool/ in it): "
                     "give the --out folder of python -m runtime listen, once it has started")
    if args.batch < 1 or (args.workers is not None and args.workers < 1):
        parser.error("--batch and --workers must be at least 1")
    from tui.app import CxrApp
    from tui.xray import detect_graphics

    detect_graphics()  # asks the terminal for Kitty/Sixel support: only possible before the app
    CxrApp(folder=args.folder, bundles=args.bundle, artifact=args.artifact, out=args.out,
           report=args.report, batch=args.batch, workers=args.workers,
           review=args.review, listener=args.listener).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
