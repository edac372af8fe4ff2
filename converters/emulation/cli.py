"""``python -m converters verify-emulated arm``: run a bundle on its emulated target and compare.

Release tooling, not part of the device runtime: it prepares (once, cached) a Debian arm64 root
filesystem under qemu-user-static, runs the kit's own ``python -m runtime triage`` inside it and on
this host over the same real images, and records the comparison in the bundle.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from targets import UnknownTargetError, get_target


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``verify-emulated`` subcommand."""
    v = sub.add_parser(
        "verify-emulated", help="run a bundle on its emulated target and compare with this host",
        description="Run the bundle with `python -m runtime triage` inside an emulated aarch64 "
                    "Debian (qemu-user-static + debootstrap, prepared once and cached) and on "
                    "this host over the same real test images; write verification.json/.md into "
                    "the bundle and record the result in its manifest. Needs root. Exit code 0: "
                    "same answers; 1: they differ; 2: the host lacks something (the message says "
                    "what to install).")
    v.add_argument("target", help="target to verify (arm)")
    v.add_argument("--bundle", type=Path, help="bundle folder (default: dist/TARGET)")
    v.add_argument("--images", type=int, default=64,
                   help="how many real test images, split over both classes (default 64)")
    v.add_argument("--images-dir", type=Path,
                   help="class folders of test images (default: $CXR_DATA_DIR/kermany_test_224)")
    v.add_argument("--cache", type=Path,
                   help="where the aarch64 rootfs is cached (default $CXR_ARM64_ROOTFS, else "
                        "/var/cache/cxr-kit/arm64-rootfs)")
    v.add_argument("--qemu-cpu", default=None,
                   help="QEMU_CPU for the emulated runs (default neoverse-n1; qemu's default 'max' "
                        "model makes OpenVINO give wrong answers)")
    v.add_argument("--suite", default=None, help="Debian release (default bookworm: glibc 2.36, "
                                                 "OpenVINO's aarch64 wheel needs >= 2.35)")
    v.add_argument("--mirror", default=None, help="Debian mirror (default deb.debian.org)")
    v.add_argument("--tolerance", type=float, default=None,
                   help="max allowed |probability difference| (default: each artifact "
                        "format's device tolerance, as the runtime's self-check)")
    v.add_argument("--no-openvino-check", action="store_true",
                   help="skip running OpenVINO on the bundle's ONNX artifacts")
    v.add_argument("--no-manifest", action="store_true",
                   help="write the report but leave manifest.json untouched")
    v.add_argument("--report", type=Path, metavar="STEM",
                   help="also write the report as STEM.json and STEM.md (the committed copies: "
                        "benchmarks/reports/arm-verification, clinical-arm-verification)")
    v.add_argument("--prepare-only", action="store_true",
                   help="only prepare (or check) the cached rootfs")
    v.add_argument("--rebuild-rootfs", action="store_true",
                   help="wipe the cached rootfs and prepare it again")
    v.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the emulated verification; exit 0 same answers, 1 differ, 2 host lacks, 3 rootfs."""
    try:
        get_target(args.target)
    except UnknownTargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from converters.emulation import verify as emulation  # only the verify command needs it
    from converters.emulation.prereqs import HostCheckError
    from converters.emulation.rootfs import RootfsError

    opts = emulation.Options(target=args.target, bundle=args.bundle or Path("dist") / args.target,
                             images=args.images, update_manifest=not args.no_manifest,
                             openvino_check=not args.no_openvino_check, report=args.report,
                             prepare_only=args.prepare_only, rebuild=args.rebuild_rootfs)
    for name, value in (("images_dir", args.images_dir), ("cache", args.cache),
                        ("qemu_cpu", args.qemu_cpu), ("suite", args.suite),
                        ("mirror", args.mirror), ("tolerance", args.tolerance)):
        if value is not None:
            setattr(opts, name, value)
    try:
        return emulation.verify(opts, args.argv)
    except HostCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RootfsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted: the cached rootfs resumes (or redoes a half-done stage) next time",
              file=sys.stderr)
        return 130

