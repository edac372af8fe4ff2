"""``python -m benchmarks run``: measure every artifact of a target's bundle against PyTorch FP32.

    python -m benchmarks run                          every target in dist/ (cpu, gpu, arm)
    python -m benchmarks run --target cpu             dist/cpu only
    python -m benchmarks run --model all              dist/<target> and dist/clinical/<target>
    python -m benchmarks run --bundle dist-resnet/gpu --checkpoint models/resnet/r18.safetensors
    python -m benchmarks run --quick                  CI: few repeats, 32 images end to end
    python -m benchmarks readme                       README/docs figure blocks from the reports
    python -m benchmarks load --bundle dist/cpu       load test of python -m runtime serve
    python -m benchmarks ray                          single-process triage against Ray

Writes OUT/report.json, OUT/report.md and OUT/charts/*.png (default OUT: benchmarks/reports).
Exit status: 0 every row measured (or not timed by design), 1 something failed (the reports are
still written and say what), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
QUICK_E2E_IMAGES = 32


def _parser() -> argparse.ArgumentParser:
    from benchmarks.suite import MODEL_FOLDERS
    from targets import target_names

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="benchmark bundles and write report.json / report.md / charts",
        description="For every artifact of each bundle, and for the PyTorch FP32 model it was built "
                    "from, each in a fresh process: batch-1 latency p50/p95/p99, throughput at "
                    "batch 1/8/32/64, load time, peak RSS, file size, AUC/sensitivity/specificity/"
                    "accuracy on the test split of the model's own dataset (the manifest's "
                    "provenance.dataset) at the bundle threshold; end-to-end "
                    "triage images/s over full-size JPEGs beside the decode-only rate. Targets "
                    "whose hardware this machine is not (arm on x86) are not timed.")
    run.add_argument("--target", choices=[*target_names(), "all"], default=None,
                     help="benchmark DIST/TARGET (default: all, unless --bundle is given)")
    run.add_argument("--model", choices=[*MODEL_FOLDERS, "all"], default="tiny",
                     help="which reference model's bundles: tiny (DIST/TARGET), clinical "
                          "(DIST/clinical/TARGET, as `converters build --model clinical --out "
                          "DIST/clinical` writes them) or all, side by side per target (default: "
                          "tiny)")
    run.add_argument("--bundle", type=Path, action="append", default=[], metavar="PATH",
                     help="also benchmark this bundle folder (repeatable), e.g. a resnet18_small "
                          "bundle to compare with the published UdaciMed figures")
    run.add_argument("--dist", type=Path, default=Path("dist"),
                     help="folder holding the target bundles (default: dist)")
    run.add_argument("--out", type=Path, default=Path("benchmarks/reports"),
                     help="report folder (default: benchmarks/reports)")
    run.add_argument("--checkpoint", type=Path, action="append", default=[], metavar="PATH",
                     help="PyTorch checkpoint(s) for the FP32 baseline (repeatable); each bundle "
                          "uses the one whose sha256 its manifest records (models/**/*.safetensors "
                          "are searched too)")
    run.add_argument("--repeats", type=int, default=None,
                     help="timed batch-1 runs for the latency percentiles (default 300; 30 quick)")
    run.add_argument("--seconds", type=float, default=None,
                     help="minimum seconds per throughput point (default 1.0; 0.1 quick)")
    run.add_argument("--threads", type=int, default=None,
                     help="engine threads for every artifact and PyTorch (default: each engine's)")
    run.add_argument("--quick", action="store_true",
                     help=f"CI mode: 30 repeats, short throughput points, {QUICK_E2E_IMAGES} "
                          "images end to end; numbers are rough, the harness is fully exercised")
    run.add_argument("--data", default=None, metavar="PATH",
                     help="the data folder (pneumoniamnist.npz, and kermany_train_224/ + "
                          "kermany_test_224/ for clinical bundles) or the npz itself (default: "
                          "$CXR_DATA_DIR, then ~/.medmnist)")
    run.add_argument("--images", type=Path, default=None, metavar="DIR",
                     help="full-size X-rays for end to end (default: cxr_samples beside the "
                          "PneumoniaMNIST file)")
    run.add_argument("--e2e-images", type=int, default=None, metavar="N",
                     help=f"end to end over N of those images (default: all; {QUICK_E2E_IMAGES} "
                          "quick)")
    run.add_argument("--no-e2e", action="store_true", help="skip the end-to-end measurements")
    run.add_argument("--workers", type=int, default=None,
                     help="decoding threads for end to end (default: the runtime CLI's)")
    run.add_argument("--timeout", type=float, default=900.0,
                     help="seconds allowed per measurement process (default 900)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    _load_parser(commands)
    readme = commands.add_parser(
        "readme", help="rewrite the figure blocks of README.md and docs/*.md from the reports",
        description="Rewrites every <!-- figures:NAME --> ... <!-- /figures:NAME --> block of the "
                    "README and its docs/ pages from the committed reports and model cards, so no "
                    "figure is typed in by hand. Exit 0 written or already up to date, 1 out "
                    "of date (--check), 2 bad input.")
    readme.add_argument("--readme", type=Path, default=Path("README.md"),
                        help="the README to update, with the docs/*.md pages beside it "
                             "(default: README.md)")
    readme.add_argument("--report", type=Path, default=Path("benchmarks/reports/report.json"),
                        help="the report to take figures from (default: "
                             "benchmarks/reports/report.json)")
    readme.add_argument("--card", type=Path,
                        default=Path("models/reference/pneumonia_cnn.json"),
                        help="the reference model's card, for its metrics (default: "
                             "models/reference/pneumonia_cnn.json)")
    readme.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the README's figures are out of date")
    from benchmarks import ray_compare

    ray = commands.add_parser(
        "ray", help="single-process triage against archive triage on Ray, same folder",
        description=ray_compare.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ray_compare.add_arguments(ray)
    return parser


def _load_parser(commands) -> None:
    load = commands.add_parser(
        "load", help="load-test python -m runtime serve on the loopback address",
        description="Start python -m runtime serve on 127.0.0.1 (with a token), send real X-rays "
                    "at each concurrency (closed loop, kept-alive connections) and record "
                    "requests/s, p50/p99 latency, failed requests and the server's memory; then "
                    "a burst of malformed uploads (each must get a 4xx) and real X-rays again "
                    "(their answers must equal the triage rows). Single-process python -m "
                    "runtime triage runs over the same files in the same run, for its images/s "
                    "and as the reference answers. Writes OUT/load_test.json and "
                    "OUT/load_test.md. Exit 0 every check passed, 1 one failed (the report says "
                    "which), 2 bad arguments.")
    load.add_argument("--bundle", type=Path, default=Path("dist/cpu"),
                      help="bundle to serve (default: dist/cpu)")
    load.add_argument("--images", type=Path, default=None, metavar="DIR",
                      help="real X-rays to send (default: cxr_samples beside the PneumoniaMNIST "
                           "file)")
    load.add_argument("--data", default=None, metavar="PATH",
                      help="pneumoniamnist.npz or its folder, to find cxr_samples (default: "
                           "$CXR_DATA_DIR, then ~/.medmnist)")
    load.add_argument("--limit", type=int, default=None, metavar="N",
                      help="use only the first N images (default: all)")
    load.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], metavar="C",
                      help="concurrent clients per level (default: 1 8 32)")
    load.add_argument("--requests", type=int, default=700,
                      help="requests per level at most (default 700)")
    load.add_argument("--seconds", type=float, default=60.0,
                      help="seconds per level at most (default 60)")
    load.add_argument("--malformed", type=int, default=200,
                      help="malformed uploads in the burst (default 200)")
    load.add_argument("--workers", type=int, default=None,
                      help="decoding threads of the service and of triage (default: the "
                           "runtime CLI's)")
    load.add_argument("--max-batch", type=int, default=32, help="service --max-batch (default 32)")
    load.add_argument("--max-wait-ms", type=float, default=5.0,
                      help="service --max-wait-ms (default 5)")
    load.add_argument("--out", type=Path, default=Path("benchmarks/reports"),
                      help="report folder (default: benchmarks/reports)")
    load.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")


def cmd_load(args: argparse.Namespace, argv: list[str]) -> int:
    from benchmarks import e2e, load_test

    numbers = [args.requests, args.malformed + 1, *args.concurrency, args.max_batch,
               args.workers or 1, args.limit or 1]
    if min(numbers) < 1 or args.seconds <= 0 or args.max_wait_ms < 0:
        print("error: --requests, --concurrency, --max-batch, --workers and --limit must be at "
              "least 1, --malformed at least 0, --seconds above 0", file=sys.stderr)
        return EXIT_USAGE
    images = args.images if args.images is not None else _default_images(args.data)
    if images is None or not images.is_dir():
        print(f"error: no folder of X-rays ({images or 'cxr_samples not found'}): pass --images "
              "DIR or --data", file=sys.stderr)
        return EXIT_USAGE
    if not (args.bundle / "manifest.json").is_file():
        print(f"error: no bundle at {args.bundle} (manifest.json missing): build one with "
              "`python -m converters build` or pass --bundle", file=sys.stderr)
        return EXIT_USAGE
    options = load_test.Options(
        bundle=args.bundle, images=images, out=args.out, concurrency=list(args.concurrency),
        requests=args.requests, seconds=args.seconds, malformed=args.malformed, limit=args.limit,
        workers=args.workers or e2e.default_workers(), max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, command="python -m benchmarks " + shlex.join(argv))
    started = time.perf_counter()

    def say(message: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr,
                  flush=True)

    try:
        report = load_test.run(options, say)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    written = load_test.write(report, args.out)
    print(load_test.summary_text(report))
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK if report["verdict"]["passed"] else EXIT_FAIL


def _default_images(data: str | None) -> Path | None:
    """``cxr_samples`` beside the PneumoniaMNIST file the runtime finds (None if none)."""
    from converters.data.labelled import DatasetError
    from converters.data.pneumoniamnist import find_npz

    try:
        npz = find_npz(data)
    except DatasetError:
        return None
    folder = npz.parent / "cxr_samples"
    return folder if folder.is_dir() else None


def cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    from benchmarks import e2e
    from benchmarks.measure import Settings
    from benchmarks.report import write_reports
    from benchmarks.suite import MODEL_FOLDERS, Options, run, succeeded
    from targets import target_names

    for name in ("repeats", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"error: --{name} must be at least 1", file=sys.stderr)
            return EXIT_USAGE
    if args.target == "all" or (args.target is None and not args.bundle):
        targets = target_names()
    else:
        targets = [args.target] if args.target else []
    settings = Settings.quick(args.repeats, args.threads) if args.quick else \
        Settings.full(args.repeats, args.threads)
    if args.seconds is not None:
        from dataclasses import replace

        settings = replace(settings, min_seconds=max(0.0, args.seconds))
    images = args.images if args.images is not None else _default_images(args.data)
    options = Options(
        targets=targets, models=list(MODEL_FOLDERS) if args.model == "all" else [args.model],
        bundles=list(args.bundle), dist=args.dist, settings=settings,
        quick=args.quick, data=args.data, images=images, e2e=not args.no_e2e,
        e2e_limit=args.e2e_images or (QUICK_E2E_IMAGES if args.quick else None),
        workers=args.workers or e2e.default_workers(), checkpoints=list(args.checkpoint),
        timeout=args.timeout, command="python -m benchmarks " + shlex.join(argv))
    started = time.perf_counter()

    def say(message: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr,
                  flush=True)

    report = run(options, say)
    written = write_reports(report, args.out)
    _print_outcome(report, written)
    return EXIT_OK if succeeded(report) else EXIT_FAIL


def _print_outcome(report: dict, written: list[Path]) -> None:
    for section in report["bundles"]:
        if section["status"] != "ok":
            print(f"{section['label']}: {section['status'].upper()}: {section['error']}")
            continue
        print(f"{section['label']} ({section['path']}):")
        for row in section["rows"]:
            name = "PyTorch FP32" if row["kind"] == "baseline" else row["name"]
            print(f"  {name:22s} {row['status']:9s} {row['verdict']}")
    s = report["summary"]
    print(f"{s['rows']} rows: {s['ok']} ok, {s['failed']} failed, {s['not_timed']} not timed, "
          f"{s['bundles_missing_or_failed']} bundle(s) missing/unreadable, "
          f"{s['e2e_failed']} end-to-end failure(s)")
    for path in written:
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "readme":
        from benchmarks.readme import run as update_readme

        return update_readme(args.readme, args.report, args.check, args.card)
    if args.command == "ray":
        from benchmarks import ray_compare

        return ray_compare.run(args, argv)
    try:
        if args.command == "load":
            return cmd_load(args, argv)
        return cmd_run(args, argv)
    except KeyboardInterrupt:
        print("\nInterrupted: no report written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
