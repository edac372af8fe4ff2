"""``python -m runtime listen``: the arguments and the command (runtime/__main__.py calls these)."""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
from pathlib import Path

from runtime.bundle.arguments import add_bundle_arguments

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def add_listen_parser(commands) -> None:
    listen = commands.add_parser(
        "listen", help="receive X-rays over DICOM (C-STORE), triage them, send SRs back",
        description="A DICOM Storage SCP: answers C-ECHO and accepts CR, DX (for presentation "
                    "and processing) and Secondary Capture images in every transfer syntax the "
                    "runner decodes. Each instance is fsynced into DIR/spool before the sender "
                    "hears success, then triaged like a folder into DIR/results.csv (a restart "
                    "resumes: every acknowledged instance is triaged once). Each scored DICOM "
                    "gets one SR (as report-sr writes it) in DIR/sr, queued in DIR/outbox for "
                    "every --send-to and --stow destination and retried with back-off until "
                    "stored; a reviewer's later decision (DIR/review.csv, the app's review of DIR) goes "
                    "out as an amended SR. Off a trusted network use --allow and TLS. --status DIR prints the "
                    "queue. Needs the [dicom] extra (pynetdicom, dicomweb-client, highdicom). "
                    "Exit status: 0 stopped cleanly, 1 the device answers differently, 2 bad "
                    "arguments, bundle or port.")
    add_bundle_arguments(listen)
    listen.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="the listener's folder: spool/, results.csv, sr/, outbox/")
    listen.add_argument("--status", type=Path, default=None, metavar="DIR",
                        help="print the queue of a listener folder and exit: received, triaged, "
                             "flagged, out of scope, SRs waiting and failed sends with the reason")
    listen.add_argument("--ae-title", default="CXRKIT",
                        help="this listener's AE title, also the calling AE when sending "
                             "(default CXRKIT)")
    listen.add_argument("--host", default="0.0.0.0",
                        help="address to listen on (default 0.0.0.0: every interface)")
    listen.add_argument("--port", type=int, default=11112, help="TCP port (default 11112)")
    listen.add_argument("--allow", action="append", default=[], metavar="AE[@HOST]",
                        help="calling AE title (optionally from this host only) allowed to "
                             "associate; repeat for several; without it any AE is accepted")
    listen.add_argument("--send-to", action="append", default=[], metavar="AE@HOST:PORT",
                        help="C-STORE the SRs to this AE (e.g. the PACS); repeatable")
    listen.add_argument("--stow", action="append", default=[], metavar="URL",
                        help="STOW-RS the SRs to this DICOMweb service root; repeatable")
    listen.add_argument("--tls-cert", type=Path, default=None, metavar="FILE",
                        help="PEM certificate: listen with TLS only (recommended off a trusted "
                             "network); needs --tls-key")
    listen.add_argument("--tls-key", type=Path, default=None, metavar="FILE",
                        help="PEM private key of --tls-cert")
    listen.add_argument("--retry-max-s", type=float, default=300.0, metavar="S",
                        help="longest wait between tries of a failing destination (default 300; "
                             "waits double from 1 s)")
    listen.add_argument("--batch", type=int, default=32, help="images per model call (default 32)")
    listen.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="decoding threads (default: CPU count, at most 4)")


def cmd_status(folder: Path) -> int:
    from runtime.pacs.status import queue_status, status_lines
    from runtime.running.results import ResultsError

    if not folder.is_dir():
        print(f"error: listener folder not found: {folder}", file=sys.stderr)
        return EXIT_USAGE
    try:
        lines = status_lines(queue_status(folder))
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{folder}:")
    for line in lines:
        print(f"  {line}")
    return EXIT_OK


def _settings(args: argparse.Namespace):
    from runtime.pacs.destinations import CStore, Stow
    from runtime.pacs.gateway import GatewaySettings
    from runtime.pacs.listener import Allowed, ListenerSettings

    if args.out is None:
        raise ValueError("--out DIR is required (the listener's folder)")
    if not 0 < args.port < 65536 or args.batch < 1 or args.workers < 1 or args.retry_max_s < 1:
        raise ValueError("--port is 1-65535, --batch and --workers at least 1, --retry-max-s at "
                         "least 1")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    if not 0 < len(args.ae_title.strip()) <= 16:
        raise ValueError(f"--ae-title {args.ae_title!r}: an AE title is 1 to 16 characters")
    listener = ListenerSettings(out=args.out, ae_title=args.ae_title.strip(), host=args.host,
                                port=args.port, allow=[Allowed.parse(a) for a in args.allow],
                                tls_cert=args.tls_cert, tls_key=args.tls_key)
    destinations = [CStore.parse(t, listener.ae_title) for t in args.send_to] + \
        [Stow(url) for url in args.stow]
    return GatewaySettings(listener, destinations, batch=args.batch, workers=args.workers,
                           max_backoff_s=args.retry_max_s)


def cmd_listen(args: argparse.Namespace) -> int:
    if args.status is not None:
        return cmd_status(args.status)
    from runtime.bundle.load import load_bundle
    from runtime.bundle.selfcheck import SelfCheckError
    from runtime.errors import BundleError
    from runtime.pacs.gateway import Gateway
    from runtime.pacs.listener import ListenerError
    from runtime.running.results import ResultsError

    try:
        settings = _settings(args)
        import dicomweb_client  # noqa: F401  (the [dicom] extra, checked before listening)
        import highdicom  # noqa: F401
        import pynetdicom  # noqa: F401
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:
        print(f"error: the listener needs the [dicom] extra ({exc.name} is missing): pip "
              "install 'cxr-deploy-kit[dicom]'", file=sys.stderr)
        return EXIT_USAGE
    try:
        bundle = load_bundle(args.bundle, args.artifact, device=args.device)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    info = bundle.describe()
    print(f"bundle {bundle.path} ({info['target']}): {info['artifact']} on {info['engine']}, "
          f"threshold {bundle.threshold:.4f}", flush=True)
    if not settings.listener.allow:
        print("allow-list: none (any calling AE is accepted): use --allow off a trusted network",
              flush=True)
    for d in settings.destinations:
        print(f"results go to {d.shown}", flush=True)
    # every triage pass borrows the console's descriptor (runtime.imaging.capture); with a
    # console stream of its own the listener gets it back each time, however long it runs
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
    gateway = Gateway(bundle, settings)
    signal.signal(signal.SIGTERM, lambda *_: gateway.stop())
    signal.signal(signal.SIGINT, lambda *_: gateway.stop())
    try:
        gateway.run()
    except (ListenerError, ResultsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SelfCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(f"stopped; results: {settings.listener.out / 'results.csv'}, SRs: "
          f"{settings.listener.out / 'sr'}, queue: python -m runtime listen --status "
          f"{settings.listener.out}", flush=True)
    return EXIT_OK
