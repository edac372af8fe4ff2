"""``python -m converters``: train the reference model, evaluate checkpoints, build bundles."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from converters.datasets import DATA_ENV_VAR, DatasetError


def _add_data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="PATH", default=None,
                        help=f"pneumoniamnist.npz or its folder (default: ${DATA_ENV_VAR}, "
                             "then ~/.medmnist)")


def cmd_train(args: argparse.Namespace) -> int:
    from converters.train import REFERENCE_DIR, TrainConfig, run_training

    cfg = TrainConfig(width=args.width, members=args.members, epochs=args.epochs, patience=args.patience,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      threads=args.threads, device=args.device, sensitivity=args.sensitivity)
    command = "python -m converters " + shlex.join(args.argv)
    out = Path(args.out) if args.out else REFERENCE_DIR
    checkpoint, card, result = run_training(cfg, args.data, out, args.name, command)
    test = result["test"]
    print(f"test AUC {test['auc']:.4f}  sensitivity {test['sensitivity']:.4f}  "
          f"specificity {test['specificity']:.4f}  accuracy {test['accuracy']:.4f}  "
          f"(threshold {result['threshold']:.4f}, chosen on val for sensitivity >= {cfg.sensitivity})")
    print(f"wrote {checkpoint}\nwrote {card}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from converters.checkpoint import load_checkpoint
    from converters.train import REFERENCE_CHECKPOINT, evaluate_model
    from converters.datasets import load_pneumoniamnist

    loaded = load_checkpoint(args.checkpoint or REFERENCE_CHECKPOINT)
    data = load_pneumoniamnist(args.data)
    result = evaluate_model(loaded.model, loaded.spec, data, args.sensitivity)
    print(f"checkpoint {loaded.path} ({loaded.spec.architecture}, sha256 {loaded.sha256[:12]}…)")
    print(f"threshold {result['threshold']:.4f} (chosen on val for sensitivity >= {args.sensitivity})")
    for split in ("val", "test"):
        m = result[split]
        print(f"{split:5s} n={m['n']:4d}  AUC {m['auc']:.4f}  sensitivity {m['sensitivity']:.4f}  "
              f"specificity {m['specificity']:.4f}  accuracy {m['accuracy']:.4f}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from converters.datasets import MEDMNIST_DEFAULT_DIR, download_pneumoniamnist, load_pneumoniamnist

    if args.download:
        print(f"wrote {download_pneumoniamnist(args.dest or MEDMNIST_DEFAULT_DIR)}")
    data = load_pneumoniamnist(args.data)
    print(f"{data.path} (md5 {data.md5})")
    for split in ("train", "val", "test"):
        s = data.split(split)
        print(f"  {split:5s} {len(s):5d} images, {int(s.labels.sum()):4d} pneumonia")
    return 0


def cmd_targets(_args: argparse.Namespace) -> int:
    from targets.__main__ import main as list_targets

    return list_targets([])


def cmd_build(args: argparse.Namespace) -> int:
    from converters.build import build_bundles, resolve_targets
    from runtime.bundle import read_manifest
    from converters.train import REFERENCE_CHECKPOINT

    targets = resolve_targets(args.target)
    checkpoint = Path(args.checkpoint) if args.checkpoint else REFERENCE_CHECKPOINT
    bundles = build_bundles(targets, checkpoint, Path(args.out), args.data,
                            progress=not args.quiet, threads=args.threads)
    for bundle in bundles:
        manifest = read_manifest(bundle)
        print(f"wrote {bundle}/  (threshold {manifest.threshold:.4f}, default "
              f"{manifest.default_artifact})")
        for art in manifest.artifacts:
            test = art.metrics.test
            speed = art.speed
            print(f"  {art.path:18s} {art.total_bytes / 1024:8.0f} KiB  parity "
                  f"{art.parity.max_abs_diff:.1e}  AUC {test.auc:.4f}  sens "
                  f"{test.sensitivity:.4f}  spec {test.specificity:.4f}  "
                  f"{speed.latency_b1_ms if speed else float('nan'):.3f} ms b1  "
                  f"{speed.throughput_b64 if speed else float('nan'):.0f} img/s b64  "
                  f"gate {art.gate.status}"
                  + (f" (measured on {', '.join(art.gate.measured_on)})"
                     if art.gate.status == "provisional" else ""))
        for skipped in manifest.skipped:
            print(f"  {skipped.path:18s} NOT built: {skipped.reason}")
        if any(a.gate.status == "provisional" for a in manifest.artifacts):
            print(f"  provisional: confirm on the device with `python -m runtime verify {bundle}`")
        print(f"  report: {bundle / 'report.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m converters", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train the reference model on PneumoniaMNIST",
                           description="Train the compact CNN at 28x28; write a safetensors "
                                       "checkpoint and a model card JSON.")
    _add_data_arg(train)
    train.add_argument("--out", default=None, help="output folder (default: models/reference)")
    train.add_argument("--name", default="pneumonia_cnn", help="file stem of checkpoint and card")
    train.add_argument("--width", type=int, default=16, help="channels of the first stage")
    train.add_argument("--members", type=int, default=3,
                       help="ensemble size: members trained with seeds SEED..SEED+N-1, "
                            "averaged in one exported graph")
    train.add_argument("--epochs", type=int, default=40, help="maximum epochs per member")
    train.add_argument("--patience", type=int, default=12,
                       help="stop after this many epochs without a better validation AUC")
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    train.add_argument("--device", default="auto", help="auto, cpu or cuda (AMP on cuda)")
    train.add_argument("--sensitivity", type=float, default=0.98,
                       help="validation sensitivity the threshold is chosen for")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint on the real val/test splits")
    _add_data_arg(evaluate)
    evaluate.add_argument("--checkpoint", default=None,
                          help="safetensors checkpoint (default: the shipped reference model)")
    evaluate.add_argument("--sensitivity", type=float, default=0.98)
    evaluate.set_defaults(func=cmd_evaluate)

    data = sub.add_parser("data", help="check (or download, when online) PneumoniaMNIST")
    _add_data_arg(data)
    data.add_argument("--download", action="store_true", help="fetch the official file first")
    data.add_argument("--dest", default=None, help="download folder (default: ~/.medmnist)")
    data.set_defaults(func=cmd_data)

    targets = sub.add_parser("targets", help="list the hardware target profiles")
    targets.set_defaults(func=cmd_targets)

    build = sub.add_parser("build", help="build per-target bundles from a checkpoint",
                           description="Export, convert, quantize and check a checkpoint on real "
                                       "images; write dist/<target>/ with manifest and report.")
    build.add_argument("--target", required=True, metavar="NAME",
                       help="a target (python -m converters targets lists them) or 'all'")
    build.add_argument("--checkpoint", default=None,
                       help="safetensors checkpoint (default: the shipped reference model)")
    _add_data_arg(build)
    build.add_argument("--out", default="dist", help="bundles folder (default: dist)")
    build.add_argument("--threads", type=int, default=None,
                       help="intra-op threads for PyTorch and every engine while checking and "
                            "timing (default: each library's own default)")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    build.set_defaults(func=cmd_build)

    from converters.emulation import cli as emulation_cli

    emulation_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from converters.checkpoint import CheckpointError
    from targets import UnknownTargetError

    errors: tuple[type[BaseException], ...] = (DatasetError, CheckpointError, UnknownTargetError)
    if args.command == "build":
        from converters.build import BuildError

        errors += (BuildError,)
    try:
        return args.func(args)
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
