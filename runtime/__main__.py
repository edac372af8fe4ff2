"""``python -m runtime``: the offline on-device runner.

    python -m runtime triage FOLDER [--bundle dist/cpu] [--artifact NAME] [--out DIR]
                                    [--device auto|cpu|cuda] [--batch N] [--workers N]
                                    [--decode-memory MIB]
                                    [--ray [ADDRESS] [--actors N] [--actor-cpus CPUS]]

    python -m runtime verify [BUNDLE] [--device auto|cpu|cuda]

    python -m runtime report-sr RESULTS_DIR --out DIR

    python -m runtime listen --bundle B --out DIR [--ae-title CXRKIT] [--port 11112]
                             [--allow AE[@HOST]]... [--send-to AE@HOST:PORT] [--stow URL]
    python -m runtime listen --status DIR

    python -m runtime serve [--bundle dist/cpu] [--host 127.0.0.1] [--port 8000]
                            [--token-file FILE] [--max-batch N] [--max-wait-ms MS] ...

Writes DIR/results.csv (one row per file, errors included), DIR/summary.json and DIR/decode.log
(decoder messages, full error detail); --ray writes the same on Ray (runtime.running.ray_triage). A rerun into the same DIR resumes where the last run
stopped. Before triaging, the artifact re-runs the
bundle's reference set on this device (cached per bundle, providers and library versions in
$CXR_CACHE_DIR or ~/.cache/cxr-kit) and triage is refused when it answers differently.
Exit status: 0 done, 1 failed (a device that answers differently included), 2 bad arguments or
bundle, 130 interrupted (rows so far kept).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

# argparse only: keeps `python -m runtime --help` light
from runtime.bundle.arguments import add_bundle_arguments

# The decode workers do small matrix products (runtime.preprocess.cpu.resize_window); a multi-threaded
# BLAS inside each worker thread oversubscribes the cores (measured: 150 -> 60 images/s decode on
# 2 cores). Must be set before numpy is first imported; an explicit setting is respected.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _format_keys() -> str:
    from runtime.contract.formats import format_keys

    return ", ".join(format_keys())


def _parser() -> argparse.ArgumentParser:
    from runtime.running.triage import (
        DEFAULT_OVERSAMPLE,  # the help states the real default  # the help states the real default
    )

    parser = argparse.ArgumentParser(
        prog="python -m runtime", description="Offline chest X-ray triage with a built bundle.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    triage = commands.add_parser(
        "triage", help="score every X-ray under a folder (JPEG, PNG, BMP, TIFF, DICOM)",
        description="Score every X-ray under FOLDER (recursively) and write DIR/results.csv "
                    "(path,status,prediction,probability,flagged,latency_ms,error,...,scope,"
                    "scope_reason) and DIR/summary.json. An image outside what the model was "
                    "trained on (not a frontal chest X-ray of a young child) is scored but marked "
                    "scope=out, prediction OUT-OF-SCOPE and flagged: read it without the model. "
                    "Rerunning into the same DIR resumes. The input folder is "
                    "only read; no network connection is opened.")
    triage.add_argument("folder", type=Path, metavar="FOLDER", help="folder of images to triage")
    triage.add_argument("--bundle", type=Path, default=Path("dist/cpu"),
                        help="bundle folder with manifest.json (default: dist/cpu)")
    triage.add_argument("--artifact", default=None,
                        help="artifact file name or format key, e.g. model.int8.onnx or "
                             f"openvino-fp32 (formats: {_format_keys()}; default: the bundle's "
                             "default_artifact)")
    triage.add_argument("--out", type=Path, default=None,
                        help="results folder (default: ./triage-results/<FOLDER name>)")
    triage.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run: auto uses CUDA only when it really works here")
    triage.add_argument("--batch", type=int, default=32, help="images per model call (default 32)")
    triage.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="decoding threads (default: CPU count, at most 4)")
    triage.add_argument("--exact-decode", action="store_true",
                        help="decode JPEGs at full size (slower; default decodes at a reduced "
                             f"size that keeps >= {DEFAULT_OVERSAMPLE}x the model's input "
                             "resolution, chosen by benchmarks/decode_scale.py)")
    triage.add_argument("--decode-memory", type=int, default=None, metavar="MIB",
                        help="decode memory shared by the workers, in MiB (default 1024); an "
                             "image needing more is an error row")
    triage.add_argument("--retry-errors", action="store_true",
                        help="score again the files whose row is an error (a time-out, a file "
                             "that was unreadable); a changed file is always scored again")
    triage.add_argument("--quiet", action="store_true", help="no progress bar")
    triage.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run on Ray (pip install 'cxr-deploy-kit[ray]'): decode tasks and "
                             "an actor pool of engines, same results.csv; without ADDRESS a "
                             "local Ray on this machine's cores, else the cluster at ADDRESS "
                             "(e.g. auto, ray://head:10001; FOLDER, --out and --bundle must be "
                             "at the same path on every node)")
    triage.add_argument("--actors", type=int, default=2,
                        help="with --ray: engine actors, one bundle each (default 2)")
    triage.add_argument("--actor-cpus", type=float, default=None, metavar="CPUS",
                        help="with --ray: CPU share reserved per actor; the rest decode "
                             "(default 0.5)")
    verify = commands.add_parser(
        "verify", help="check a bundle's files and re-run every artifact on its reference set",
        description="Check every file against the manifest (size, sha256), then run every "
                    "artifact over the bundle's reference images with the providers this device "
                    "really gives, and compare with the answers recorded at build (decision "
                    "agreement, max |difference| within the format's tolerance). Exit 0: all "
                    "agree; 1: an artifact answers differently; 2: a missing or broken bundle.")
    verify.add_argument("bundle", type=Path, nargs="?", default=Path("dist/cpu"))
    verify.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run: auto uses CUDA only when it really works here")
    report_sr = commands.add_parser(
        "report-sr", help="write one DICOM Structured Report per triaged DICOM image",
        description="For every DICOM image scored by a triage run, write a DICOM Comprehensive "
                    "SR (TID 1500 measurement report) into DIR: it belongs to the image's study, "
                    "references the image (study, series, SOP instance UIDs), and records the "
                    "finding (pneumonia suspected, not suspected, or indeterminate when out of "
                    "scope), the probability, the threshold, the scope verdict and reason, the "
                    "model and artifact (sha256), and the reviewer's decision from review.csv "
                    "when there is one. Non-DICOM and error rows are skipped. The source files "
                    "are re-read (never written) and must be the files that were scored. Needs "
                    "the [dicom] extra (highdicom). Exit 0: done; 1: some images could not be "
                    "reported; 2: bad arguments or results folder.")
    report_sr.add_argument("results", type=Path, metavar="RESULTS_DIR",
                           help="a triage results folder (results.csv, run.json)")
    report_sr.add_argument("--out", type=Path, required=True, metavar="DIR",
                           help="folder for the SR files (not inside the triage input folder)")
    _serve_parser(commands)
    from runtime.pacs.cli import add_listen_parser

    add_listen_parser(commands)
    return parser


def _serve_parser(commands) -> None:
    from runtime.serve.auth import TOKEN_ENV

    serve = commands.add_parser(
        "serve", help="serve the bundle over HTTP (POST /v1/triage; needs the [serve] extra)",
        description="Serve the bundle over HTTP (FastAPI on uvicorn): POST /v1/triage with one "
                    "image (JPEG, PNG, BMP, TIFF, DICOM) as the request body or a multipart file "
                    "field 'file' answers with the verdict a results.csv row would hold "
                    "(probability, flagged, threshold, scope and reason, bundle and artifact); "
                    "GET /v1/model the bundle facts and service counters; GET /health. Every "
                    f"/v1/ request needs 'Authorization: Bearer TOKEN' (TOKEN from ${TOKEN_ENV} or "
                    "--token-file); without a token the service listens only on a loopback "
                    "address. Concurrent requests are batched into one model call. The bundle's "
                    "device self-check runs before the service starts. Exit status: 1 the device "
                    "answers differently, 2 bad arguments, bundle or token.")
    add_bundle_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; any "
                            "other needs a token)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    serve.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                       help=f"file holding the API token (default: ${TOKEN_ENV})")
    serve.add_argument("--max-batch", type=int, default=32,
                       help="most images in one model call (default 32)")
    serve.add_argument("--max-wait-ms", type=float, default=5.0,
                       help="how long the first request of a batch waits for others (default 5)")
    serve.add_argument("--max-upload-mib", type=float, default=64.0,
                       help="largest request body accepted, in MiB (default 64); larger: 413")
    serve.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                       help="decoding threads (default: CPU count, at most 4)")
    serve.add_argument("--decode-memory", type=int, default=None, metavar="MIB",
                       help="decode memory shared by the workers, in MiB (default 1024)")


def _raise_interrupt(signum, frame) -> None:  # SIGTERM behaves like Ctrl-C: stop cleanly
    raise KeyboardInterrupt


def cmd_verify(args: argparse.Namespace) -> int:
    from runtime.bundle.artifacts import read_manifest
    from runtime.bundle.selfcheck import verify_all
    from runtime.bundle.site import read_site_calibration, site_words
    from runtime.errors import BundleError

    try:
        manifest = read_manifest(args.bundle)
        site = read_site_calibration(args.bundle, manifest)
        checks = verify_all(args.bundle, args.device)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{'artifact':20s} {'format':14s} {'ran on':28s} {'agreement':>9s} {'max |diff|':>10s} "
          f"{'tolerance':>9s}  verdict")
    for c in checks:
        verdict = "ok" if c.passed else "DIFFERENT" + (f": {c.error}" if c.error else "")
        print(f"{c.artifact:20s} {c.format:14s} {', '.join(c.providers) or '-':28s} "
              f"{100 * c.agreement:8.1f}% {c.max_abs_diff:10.2e} {c.tolerance:9.0e}  {verdict}")
    failed = [c.artifact for c in checks if not c.passed]
    n = manifest.reference_set.n if manifest.reference_set else 0
    if failed:
        print(f"bundle {args.bundle}: {', '.join(failed)} answer differently on this device "
              f"than at build ({n} reference images); do not use them here", file=sys.stderr)
        return EXIT_FAIL
    print(f"bundle {args.bundle} verified: {len(checks)} artifacts, files intact, same answers on "
          f"{n} reference images; default {manifest.default_artifact}")
    if site:
        print(f"{site_words(site)} (sha256 checked); build threshold {manifest.threshold:.4f}")
    return EXIT_OK


def cmd_triage(args: argparse.Namespace) -> int:
    from runtime.bundle.load import load_bundle
    from runtime.bundle.selfcheck import SelfCheckError
    from runtime.errors import BundleError
    from runtime.judging.population import PopulationCheckError
    from runtime.running.lock import EXIT_BUSY, FolderBusy
    from runtime.running.ray_triage import RayRunError, RaySetupError
    from runtime.running.results import ResultsError
    from runtime.running.triage import DEFAULT_OVERSAMPLE, triage

    if args.batch < 1 or args.workers < 1 or args.actors < 1 or \
            (args.decode_memory is not None and args.decode_memory < 64):
        print("error: --batch, --workers and --actors must be at least 1, --decode-memory at "
              "least 64", file=sys.stderr)
        return EXIT_USAGE
    if not args.folder.is_dir():
        print(f"error: input folder not found: {args.folder}", file=sys.stderr)
        return EXIT_USAGE
    out = args.out or Path("triage-results") / (args.folder.resolve().name or "root")
    try:
        bundle = load_bundle(args.bundle, args.artifact, device=args.device)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    info = bundle.describe()
    print(f"bundle {bundle.path} ({info['target']}): {info['artifact']} on {info['engine']} "
          f"{info['active']} [{info['inference_precision']}], "
          f"{_threshold_words(bundle.thresholds)}", file=sys.stderr)
    if bundle.site_in_force:
        from runtime.bundle.site import site_words

        print(f"{site_words(bundle.site_in_force)}; build threshold "
              f"{bundle.manifest.threshold:.4f}", file=sys.stderr)

    bar = None

    def on_total(total: int) -> None:
        nonlocal bar
        if args.quiet:
            return
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True,
                   desc="triage", smoothing=0.1)

    def progress(done: int, failed: int) -> None:
        if bar is not None:
            bar.update(1)
            if failed:
                bar.set_postfix(errors=failed, refresh=False)

    signal.signal(signal.SIGTERM, _raise_interrupt)
    interrupted = False
    common = dict(batch=args.batch, oversample=None if args.exact_decode else DEFAULT_OVERSAMPLE,
                  progress=progress, on_total=on_total, retry_errors=args.retry_errors,
                  **({"memory_budget": args.decode_memory * 2**20} if args.decode_memory else {}))
    try:
        if args.ray is not None:
            from runtime.running.ray_triage import DEFAULT_ACTOR_CPUS, ray_triage

            result = ray_triage(args.folder, bundle, out, address=args.ray or None,
                                actors=args.actors, actor_cpus=args.actor_cpus or
                                DEFAULT_ACTOR_CPUS, **common)
        else:
            result = triage(args.folder, bundle, out, workers=args.workers, **common)
        summary = result.summary
    except KeyboardInterrupt:
        interrupted = True
        summary = _read_summary(out)
    except FolderBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except (ResultsError, FileNotFoundError, RaySetupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (SelfCheckError, RayRunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except PopulationCheckError as exc:  # run on each batch: the rows written so far are kept
        print(f"error: {exc}; the rows written so far are kept: fix it and rerun the same "
              "command to resume", file=sys.stderr)
        return EXIT_FAIL
    finally:
        if bar is not None:
            bar.close()
    _print_summary(args.folder, out, summary, interrupted)
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from runtime.bundle.load import load_bundle
    from runtime.bundle.selfcheck import SelfCheckError, self_check
    from runtime.errors import BundleError
    from runtime.serve.auth import TOKEN_ENV, AuthError, check_host, load_token

    if (args.max_batch < 1 or args.workers < 1 or args.max_wait_ms < 0 or
            args.max_upload_mib <= 0 or not 0 <= args.port <= 65535 or
            (args.decode_memory is not None and args.decode_memory < 64)):
        print("error: --max-batch and --workers must be at least 1, --max-wait-ms at least 0, "
              "--max-upload-mib above 0, --port 0-65535, --decode-memory at least 64",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        token = load_token(args.token_file)
        check_host(args.host, token)
    except AuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        import uvicorn

        from runtime.serve.app import ServeSettings, create_app
    except ImportError as exc:
        print(f"error: the service needs the [serve] extra ({exc.name} is missing): "
              "pip install 'cxr-deploy-kit[serve]'", file=sys.stderr)
        return EXIT_USAGE
    try:
        bundle = load_bundle(args.bundle, args.artifact, device=args.device)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        check = self_check(bundle)
    except SelfCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    _quiet_libraries()
    info = bundle.describe()
    settings = ServeSettings(
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_upload_bytes=int(args.max_upload_mib * 2**20), workers=args.workers,
        **({"decode_memory_bytes": args.decode_memory * 2**20} if args.decode_memory else {}))
    print(f"bundle {bundle.path} ({info['target']}): {info['artifact']} on {info['engine']} "
          f"{info['active']} [{info['inference_precision']}], "
          f"{_threshold_words(bundle.thresholds)}; device check: agrees with the build on {check['n']} reference images"
          f"{' (remembered)' if check.get('cached') else ''}", file=sys.stderr)
    if token:
        print(f"authentication: bearer token required on /v1/ (from "
              f"{args.token_file or '$' + TOKEN_ENV})", file=sys.stderr)
    else:
        print(f"authentication: NONE (no ${TOKEN_ENV} or --token-file): listening on loopback "
              f"{args.host} only; any process on this machine can call it", file=sys.stderr)
    print(f"serving http://{args.host}:{args.port}/v1/triage (batches of up to {args.max_batch}, "
          f"wait {args.max_wait_ms:g} ms; uploads up to {args.max_upload_mib:g} MiB); Ctrl-C "
          "stops", file=sys.stderr, flush=True)
    app = create_app(bundle, token, settings, check)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info",
                timeout_graceful_shutdown=10)
    return EXIT_OK


def _quiet_libraries() -> None:
    """Decoder warnings can quote DICOM values (a birth date, a name): the service logs none."""
    import warnings

    from runtime.imaging.capture import LIBRARY_LOGGERS

    warnings.simplefilter("ignore")
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.addHandler(logging.NullHandler())
        library.propagate = False
    logging.getLogger("runtime.serve").setLevel(logging.INFO)


def _read_summary(out: Path) -> dict:
    import json

    try:
        return json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _threshold_words(thresholds: dict[str, float]) -> str:
    """"threshold 0.2102", or with several findings "thresholds BACTERIAL 0.3000, VIRAL ..."."""
    if len(thresholds) == 1:
        return f"threshold {next(iter(thresholds.values())):.4f}"
    return "thresholds " + ", ".join(f"{label} {t:.4f}" for label, t in thresholds.items())


def _flag_rule(bundle: dict) -> str:
    """When a row is flagged, in words (``bundle``: summary.json's ``bundle``)."""
    thresholds = bundle.get("thresholds") or {}
    if len(thresholds) > 1:
        return "a finding at its threshold: " + ", ".join(
            f"{label} >= {t:.3f}" for label, t in thresholds.items())
    return f"probability >= {bundle.get('threshold', float('nan')):.3f}"


def _print_summary(folder: Path, out: Path, summary: dict, interrupted: bool) -> None:
    counts = summary.get("counts", {})
    run = summary.get("this_run", {})
    bundle = summary.get("bundle", {})
    if interrupted:
        print("\nInterrupted: every row written so far is kept; rerun the same command to "
              "resume.", file=sys.stderr)
    print(f"Triage of {folder}: {counts.get('total', 0)} files, {counts.get('ok', 0)} scored "
          f"({counts.get('in_scope', 0)} in scope, {counts.get('out_of_scope', 0)} out of scope: "
          f"read those without the model, see scope_reason), {counts.get('flagged', 0)} flagged "
          f"({_flag_rule(bundle)}, or out of scope), "
          f"{counts.get('errors', 0)} could not be triaged (see the error column)")
    if summary.get("lock_taken_over"):
        print(f"Took over the results folder from a run that had stopped: "
              f"{summary['lock_taken_over']}")
    if run.get("ray"):
        ray = run["ray"]
        print(f"Ran on Ray {ray['ray_version']} ({ray['address']}, {ray['cluster_cpus']} CPUs): "
              f"{ray['actors']} engine actor{'' if ray['actors'] == 1 else 's'}")
    if run:
        print(f"This run: {run.get('processed', 0)} processed, "
              f"{run.get('skipped_already_done', 0)} already done, "
              f"{run.get('images_per_second', 0):.1f} images/s, peak memory "
              f"{run.get('peak_rss_mib') or 0:.0f} MiB")
    check = summary.get("device_check")
    if check:
        print(f"Device check: {check['artifact']} on {', '.join(check['providers'])} agrees with "
              f"the build on {check['n']} reference images (max |difference| "
              f"{check['max_abs_diff']:.1e}){'; remembered from an earlier run' if check.get('cached') else ''}")
    site = bundle.get("site")
    if site:
        counts = ", ".join(f"{n} {name}" for name, n in site["counts"].items())
        print(f"Threshold {site['threshold']:.4f} from the site calibration \"{site['site']}\" "
              f"({site['created_at'][:10]}, {counts} in-scope labelled images; build threshold "
              f"{bundle.get('build_threshold', float('nan')):.4f})")
    print(f"Results: {out / 'results.csv'}")
    if (out / "decode.log").is_file() and (out / "decode.log").stat().st_size:
        print(f"Decoder messages: {out / 'decode.log'}")
    print(f"Summary: {out / 'summary.json'}")


#: SR files listed one by one on the console (the rest are counted)
SHOWN = 20


def cmd_report_sr(args: argparse.Namespace) -> int:
    from runtime.clinic.report_sr import SRUnavailable, make_reports
    from runtime.running.results import ResultsError

    try:
        outcome = make_reports(args.results, args.out)
    except (ResultsError, SRUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for path, why in outcome.problems:
        print(f"not reported: {path}: {why}", file=sys.stderr)
    print(f"DICOM SR: {len(outcome.written)} written to {outcome.out}; skipped "
          f"{outcome.not_dicom} non-DICOM rows and {outcome.error_rows} error rows"
          + (f"; {len(outcome.problems)} DICOM images could not be reported (see above)"
             if outcome.problems else ""))
    for path in outcome.written[:SHOWN]:
        print(f"  {path}")
    if len(outcome.written) > SHOWN:
        print(f"  … and {len(outcome.written) - SHOWN} more in {outcome.out}")
    return EXIT_FAIL if outcome.problems else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)
    args = _parser().parse_args(argv)
    try:
        if args.command == "verify":
            return cmd_verify(args)
        if args.command == "report-sr":
            return cmd_report_sr(args)
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "listen":
            from runtime.pacs.cli import cmd_listen

            return cmd_listen(args)
        return cmd_triage(args)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
