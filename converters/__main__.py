"""``python -m converters``: train the reference model, evaluate checkpoints, build bundles."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Iterator

from converters.data.labelled import DATA_ENV_VAR, DatasetError


def _add_data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="PATH", default=None,
                        help=f"pneumoniamnist.npz or its folder, or for --model clinical or "
                             f"pneumonia_type the folder holding kermany_train_224/ and kermany_test_224/ (default: "
                             f"${DATA_ENV_VAR}, then ~/.medmnist or ../shared/data)")


MODELS = ("tiny", "clinical", "pneumonia_type")
KERMANY_MODELS = ("clinical", "pneumonia_type")  # trained on the Kermany folders, one net each
CLINICAL_ONLY = ("size", "folds", "max_train", "val_only")


def _config(args: argparse.Namespace):
    """The model's TrainConfig (tiny) or ClinicalConfig / PneumoniaTypeConfig, with the options
    the user gave."""
    from converters.clinical import config_for
    from converters.train import TrainConfig

    given = {k: getattr(args, k) for k in ("width", "members", "epochs", "patience",
                                          "batch_size", "lr", "seed", "threads", "device",
                                          "sensitivity", "size", "max_train")
             if getattr(args, k, None) is not None}
    if args.model == "tiny":
        wrong = [k for k in CLINICAL_ONLY if getattr(args, k, None) not in (None, False)]
        if wrong:
            raise UsageError(f"--{wrong[0].replace('_', '-')} applies to --model clinical or "
                             "pneumonia_type only")
        given.pop("max_train", None)
        return TrainConfig(**given)
    if given.get("members", 1) != 1:
        raise UsageError(f"--members applies to --model tiny only (the {args.model} model is one "
                         "net)")
    return config_for(args.model)(**given)


class UsageError(ValueError):
    """A command-line option that does not fit the chosen model."""


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.model in KERMANY_MODELS:
        return _train_clinical(args, cfg)
    from converters.train import REFERENCE_DIR, run_training

    command = "python -m converters " + shlex.join(args.argv)
    out = Path(args.out) if args.out else REFERENCE_DIR
    checkpoint, card, result = run_training(cfg, args.data, out, args.name or "pneumonia_cnn",
                                            command)
    test = result["test"]
    print(f"test AUC {test['auc']:.4f}  sensitivity {test['sensitivity']:.4f}  "
          f"specificity {test['specificity']:.4f}  accuracy {test['accuracy']:.4f}  "
          f"(threshold {result['threshold']:.4f}, chosen on val for sensitivity >= {cfg.sensitivity})")
    print(f"wrote {checkpoint}\nwrote {card}")
    return 0


def _train_clinical(args: argparse.Namespace, cfg) -> int:
    from converters.clinical import card_for, cross_validate, run_clinical_training, validation_run

    if args.folds:
        result = cross_validate(cfg, args.data, args.folds)
        aucs = "  ".join(f"{a:.4f}" for a in result["val_auc"])
        print(f"{args.folds}-fold patient-grouped CV, validation AUC per fold: {aucs}")
        print(f"mean {result['mean']:.4f} +- {result['sd']:.4f} (sd)")
        if args.out:
            path = Path(args.out) / f"cv{args.folds}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {path}")
        return 0
    if args.val_only:
        result = validation_run(cfg, args.data)
        print(f"{cfg.size} px: validation AUC {result['val_auc']:.4f} (best epoch "
              f"{result['best_epoch']}, {result['seconds']:.0f} s); the test split was not used")
        return 0
    command = "python -m converters " + shlex.join(args.argv)
    out = Path(args.out) if args.out else cfg.out_dir
    checkpoint, card, result = run_clinical_training(cfg, args.data, out,
                                                     args.name or cfg.file_stem, command)
    print(card_for(cfg.spec()).format_table(result))
    print(f"wrote {checkpoint}\nwrote {card}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from converters.checkpoint import load_checkpoint

    if args.model in KERMANY_MODELS:
        from converters.clinical import card_for

        loaded = load_checkpoint(args.checkpoint or _shipped_checkpoint(args.model))
        card = card_for(loaded.spec)
        result = card.evaluate_checkpoint(loaded, args.data, args.sensitivity)
        print(f"checkpoint {loaded.path} ({loaded.spec.name}, sha256 {loaded.sha256[:12]}…)")
        print(card.format_table(result))
        return 0
    from converters.data.pneumoniamnist import load_pneumoniamnist
    from converters.train import REFERENCE_CHECKPOINT, evaluate_model

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


def _add_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODELS, default="tiny",
                        help="tiny: 28x28 PneumoniaMNIST model (models/reference); clinical: "
                             "128 px Kermany model (models/clinical); pneumonia_type: 128 px "
                             "Kermany model, normal / bacterial / viral (models/pneumonia_type). "
                             "Default: tiny")


def cmd_data(args: argparse.Namespace) -> int:
    from converters.data.pneumoniamnist import (
        MEDMNIST_DEFAULT_DIR,
        download_pneumoniamnist,
        load_pneumoniamnist,
    )

    if args.download:
        print(f"wrote {download_pneumoniamnist(args.dest or MEDMNIST_DEFAULT_DIR)}")
    data = load_pneumoniamnist(args.data)
    print(f"{data.path} (md5 {data.md5})")
    for split in ("train", "val", "test"):
        s = data.split(split)
        print(f"  {split:5s} {len(s):5d} images, {int(s.labels.sum()):4d} pneumonia")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from converters.config.describe import describe
    from converters.config.model import load_config
    from converters.config.tables import ConfigError

    config = load_config(args.check)
    try:
        print("\n".join(describe(config)))
        if args.load:
            from converters.config.network import run_once

            shape = run_once(config, trust_pickle=args.trust_pickle)
            print(f"loaded      {config.network.source} network; a blank "
                  f"{'x'.join(map(str, config.input.shape))} image gives {shape}")
    except ConfigError as exc:
        raise ConfigError(f"{config.path}: {exc}") from None
    return 0


def cmd_targets(_args: argparse.Namespace) -> int:
    from targets.__main__ import main as list_targets

    return list_targets([])


def _shipped_checkpoint(model: str) -> Path:
    """The checkpoint shipped for ``--model`` (tiny: models/reference, clinical: models/clinical,
    pneumonia_type: models/pneumonia_type)."""
    if model in KERMANY_MODELS:
        from converters.clinical import CLINICAL_CHECKPOINT, PNEUMONIA_TYPE_CHECKPOINT

        return Path(CLINICAL_CHECKPOINT if model == "clinical" else PNEUMONIA_TYPE_CHECKPOINT)
    from converters.train import REFERENCE_CHECKPOINT

    return Path(REFERENCE_CHECKPOINT)


CONFIG_FILE = "model.toml"  # a model's config, beside its weights


@contextlib.contextmanager
def _data_for_config(data: str | None) -> Iterator[None]:
    """``--data`` for a config build: the value of ``${CXR_DATA_DIR}`` in its paths (a file's
    folder for a file) while it is read. Without it, an unset variable takes the data folder
    beside the checkout, where the reference models' configs look by default."""
    from converters.data.kermany import candidate_roots

    previous = os.environ.get(DATA_ENV_VAR)
    beside_checkout = candidate_roots()[-1]  # ../shared/data when the variable is unset
    if data is not None:
        folder = Path(data)
        os.environ[DATA_ENV_VAR] = str(folder.parent if folder.is_file() else folder)
    elif not previous and beside_checkout.is_dir():
        os.environ[DATA_ENV_VAR] = str(beside_checkout)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DATA_ENV_VAR, None)
        else:
            os.environ[DATA_ENV_VAR] = previous


def cmd_build(args: argparse.Namespace) -> int:
    from converters.build import build_bundles, build_from_config, resolve_targets
    from converters.build_log import BUILD_LOG
    from runtime.bundle.artifacts import read_manifest

    targets = resolve_targets(args.target)
    if args.config and (args.checkpoint or args.model):
        raise UsageError("--config names the network, its weights and its data: leave out "
                         "--checkpoint and --model")
    population = _population_request(args)  # --looks-like: refused beside a config of yours
    if not args.checkpoint:
        # a reference model is a config like any other: models/<its folder>/model.toml
        args.config = args.config or _shipped_checkpoint(args.model or "tiny").parent / CONFIG_FILE
    log = Path(args.out) / BUILD_LOG
    log_line = f"build log (the libraries' own messages): {log}"
    try:
        if args.config:
            with _data_for_config(args.data):
                bundles = build_from_config(targets, args.config, Path(args.out),
                                            progress=not args.quiet, threads=args.threads,
                                            log=log, trust_pickle=args.trust_pickle,
                                            population=population)
        else:
            bundles = build_bundles(targets, Path(args.checkpoint), Path(args.out), args.data,
                                    progress=not args.quiet, threads=args.threads, log=log,
                                    population=population)
    except Exception:  # the error itself follows (main's message or the traceback)
        print(log_line, file=sys.stderr)
        raise
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
    if any(read_manifest(bundle).population_check is None for bundle in bundles):
        from converters.population import NO_CHECK

        print(NO_CHECK)
    print(log_line)
    return 0


def _population_request(args: argparse.Namespace):
    """``--out-of-population`` as the build's request (None without it); folders checked now,
    before any work."""
    from converters.population import PopulationRequest

    if not args.out_of_population:
        if args.looks_like or args.population_epochs is not None:
            raise UsageError("--looks-like and --population-epochs go with --out-of-population "
                             "DIR")
        return None
    if args.config and args.looks_like:
        raise UsageError("--looks-like: with --config the words come from the config's "
                         "[population] looks_like; put them there")
    missing = [str(d) for d in args.out_of_population if not d.is_dir()]
    if missing:
        raise UsageError(f"--out-of-population {missing[0]}: not a folder; give a folder of "
                         "X-rays the model was not made for")
    if args.population_epochs is not None and args.population_epochs < 1:
        raise UsageError("--population-epochs: at least 1")
    given = {"epochs": args.population_epochs} if args.population_epochs is not None else {}
    return PopulationRequest(tuple(args.out_of_population), args.looks_like, **given)


def cmd_triton(args: argparse.Namespace) -> int:
    from converters.triton import write_repository

    repo = write_repository(args.bundle, args.out, max_batch=args.max_batch_size,
                            queue_delay_us=args.max_queue_delay_us,
                            cpu_accelerator=args.cpu_accelerator, bytes_in=not args.no_bytes_in,
                            ops_library=args.ops_library)
    print(f"wrote the Triton model repository {repo.root}/ from {args.bundle}")
    for model in repo.models:
        print(f"  {model.name:36s} {model.summary}")
        for path in [model.config, *model.files]:
            print(f"    wrote {path}")
    for artifact, why in repo.skipped:
        print(f"  {artifact}: NOT written: {why}")
    for note in repo.notes:
        print(f"  check: {note}")
    print(f"  serve: tritonserver --model-repository={repo.root.resolve()}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import datetime as dt

    from converters.calibrate import (
        CalibrationError,
        calibrate,
        check_folders,
        check_labelled,
        check_site_name,
        format_calibration,
        slug,
    )
    from converters.site_bundle import default_out, write_site_bundle
    from runtime.bundle.artifacts import read_manifest
    from runtime.bundle.load import load_bundle
    from runtime.bundle.selfcheck import SelfCheckError
    from runtime.bundle.site import site_words
    from runtime.errors import BundleError
    from runtime.running.results import ResultsError

    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        site = check_site_name(args.site)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else default_out(args.bundle, slug(site))
        work = Path(args.work) if args.work else Path("calibration-runs") / f"{slug(site)}-{stamp}"
        check_folders(args.bundle, args.labelled, work, out)
        check_labelled(args.labelled, read_manifest(args.bundle).model.classes)
        bundle = load_bundle(args.bundle, args.artifact, device=args.device)
        print(f"bundle {bundle.path}: {bundle.artifact.path} on {bundle.engine.name} "
              f"{list(bundle.engine.active)}, build "
              + (f"threshold {bundle.manifest.threshold:.4f}" if len(bundle.findings) == 1 else
                 "thresholds " + ", ".join(f"{label} {t:.4f}" for label, t in
                                           bundle.manifest.thresholds().items())),
              file=sys.stderr)
        bar = None

        def on_total(total: int) -> None:
            nonlocal bar
            if not args.quiet:
                from tqdm import tqdm

                bar = tqdm(total=total, unit="img", file=sys.stderr, desc="calibrate")

        try:
            calibration = calibrate(bundle, args.labelled, site, work, args.sensitivity,
                                    workers=args.workers, on_total=on_total,
                                    progress=lambda done, failed: bar.update(1) if bar else None,
                                    command="python -m converters " + shlex.join(args.argv))
        finally:
            if bar is not None:
                bar.close()
        written = write_site_bundle(args.bundle, out, calibration)
    except (CalibrationError, BundleError, ResultsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SelfCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted: no calibration was written; the original bundle is unchanged.",
              file=sys.stderr)
        return 130
    print(format_calibration(calibration))
    print(f"\nwrote {written}/ (a copy of {args.bundle} with site_calibration.json;"
          f" {args.bundle} is unchanged)\n  {site_words(calibration)}\n"
          f"per-image results: {work / 'labelled_results.csv'} (stays on this machine)\n"
          f"use it: python -m runtime triage FOLDER --bundle {written}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m converters", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a reference model (tiny, clinical or "
                                         "pneumonia_type)",
                           description="Train a reference model; write a safetensors checkpoint "
                                       "and a model card JSON. tiny: the compact CNN ensemble at "
                                       "28x28 on PneumoniaMNIST. clinical: a CNN at 128-224 px on "
                                       "the Kermany X-rays, validated on a patient-grouped split. "
                                       "pneumonia_type: the clinical recipe on normal / "
                                       "bacterial / viral (the Kermany finding), same patient "
                                       "split, early stopping on the mean one-vs-rest "
                                       "validation AUC; also writes train.csv, val.csv and "
                                       "test.csv (the split, for model.toml's [data]).")
    _add_model_arg(train)
    _add_data_arg(train)
    train.add_argument("--out", default=None,
                       help="output folder (default: models/reference, models/clinical or "
                            "models/pneumonia_type)")
    train.add_argument("--name", default=None,
                       help="file stem of checkpoint and card (default: pneumonia_cnn, "
                            "clinical_cnn or pneumonia_type)")
    train.add_argument("--width", type=int, default=None,
                       help="channels of the first stage (default: 16 tiny, 12 clinical)")
    train.add_argument("--members", type=int, default=None,
                       help="tiny only: ensemble size (default 3): members trained with seeds "
                            "SEED..SEED+N-1, averaged in one exported graph")
    train.add_argument("--epochs", type=int, default=None,
                       help="maximum epochs per member (default: 40 tiny, 12 clinical)")
    train.add_argument("--patience", type=int, default=None,
                       help="stop after this many epochs without a better validation AUC "
                            "(default: 12 tiny, 6 clinical)")
    train.add_argument("--batch-size", type=int, default=None,
                       help="default: 128 tiny, 64 clinical")
    train.add_argument("--lr", type=float, default=None,
                       help="peak learning rate, one-cycle (default: 3e-3 tiny, 2e-3 clinical)")
    train.add_argument("--seed", type=int, default=None, help="default 0")
    train.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default 2)")
    train.add_argument("--device", default=None, help="auto, cpu or cuda (AMP on cuda)")
    train.add_argument("--sensitivity", type=float, default=None,
                       help="validation sensitivity the threshold is chosen for (default 0.98)")
    train.add_argument("--size", type=int, default=None,
                       help="clinical and pneumonia_type only: input size in px, 128-224 (default 128)")
    train.add_argument("--folds", type=int, default=None, metavar="K",
                       help="clinical and pneumonia_type only: patient-grouped K-fold cross-validation; prints the "
                            "validation AUC per fold and mean +- sd, writes no checkpoint")
    train.add_argument("--max-train", type=int, default=None, metavar="N",
                       help="clinical and pneumonia_type only: train on N images only (a tiny-budget check)")
    train.add_argument("--val-only", action="store_true",
                       help="clinical and pneumonia_type only: train and print the validation AUC; never touches "
                            "the test split, writes nothing (for choosing a recipe)")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint on the real val/test splits")
    _add_model_arg(evaluate)
    _add_data_arg(evaluate)
    evaluate.add_argument("--checkpoint", default=None,
                          help="safetensors checkpoint (default: the shipped model of --model)")
    evaluate.add_argument("--sensitivity", type=float, default=0.98)
    evaluate.set_defaults(func=cmd_evaluate)

    data = sub.add_parser("data", help="check (or download, when online) PneumoniaMNIST")
    _add_data_arg(data)
    data.add_argument("--download", action="store_true", help="fetch the official file first")
    data.add_argument("--dest", default=None, help="download folder (default: ~/.medmnist)")
    data.set_defaults(func=cmd_data)

    config = sub.add_parser(
        "config", help="check a model config (model.toml) and print what the kit understood",
        description="Validate a model.toml (docs/model-config.md) and print the network source, "
                    "the input (channels, size, crop, interpolation, normalisation), the "
                    "outputs (task, labels, findings and the sensitivity each threshold "
                    "targets), the population and the data (images per label). Exit 0 when "
                    "it is usable, 2 with the problem and its fix when not.")
    config.add_argument("--check", required=True, type=Path, metavar="PATH",
                        help="the model.toml to check")
    config.add_argument("--load", action="store_true",
                        help="also load the network with its weights and run it on one blank "
                             "image of the declared input (checks the output count)")
    config.add_argument("--trust-pickle", action="store_true",
                        help="let a weights file that holds pickled Python objects load "
                             "(unpickling runs code from the file: only for files you trust)")
    config.set_defaults(func=cmd_config)

    targets = sub.add_parser("targets", help="list the hardware target profiles")
    targets.set_defaults(func=cmd_targets)

    build = sub.add_parser("build", help="build per-target bundles from a model config or a "
                                         "checkpoint",
                           description="Export, convert, quantize and check a model on real "
                                       "images; write dist/<target>/ with manifest and report. "
                                       "Your own model: --config PATH/model.toml "
                                       "(docs/model-config.md); the kit's reference models "
                                       "are configs too: --model tiny|clinical|pneumonia_type "
                                       "builds models/<folder>/model.toml.")
    build.add_argument("--target", required=True, metavar="NAME",
                       help="a target (python -m converters targets lists them) or 'all'")
    build.add_argument("--config", type=Path, default=None, metavar="PATH",
                       help="a model.toml: the network, its weights, input, outputs and data "
                            "(python -m converters config --check PATH validates it)")
    build.add_argument("--trust-pickle", action="store_true",
                       help="with --config: allow weights that hold pickled Python objects "
                            "(unpickling runs code from the file: only for files you trust)")
    _add_model_arg(build)
    build.set_defaults(model=None)  # None: tiny, unless --config or --checkpoint names the model
    build.add_argument("--checkpoint", default=None,
                       help="a kit-trained safetensors checkpoint (converters train) instead of "
                            "a config; its declared dataset picks the evaluation images")
    build.add_argument("--data", metavar="PATH", default=None,
                       help=f"the data folder: with a config (a reference model's, or "
                            f"--config), the value of ${{{DATA_ENV_VAR}}} in its paths; with "
                            f"--checkpoint, pneumoniamnist.npz or the folder holding "
                            f"kermany_train_224/ and kermany_test_224/ (default: "
                            f"${DATA_ENV_VAR}, then ../shared/data beside the checkout)")
    build.add_argument("--out", default="dist", help="bundles folder (default: dist)")
    build.add_argument("--threads", type=int, default=None,
                       help="intra-op threads for PyTorch and every engine while checking and "
                            "timing (default: each library's own default)")
    from converters.population import EPOCHS as POPULATION_EPOCHS

    build.add_argument("--out-of-population", action="append", default=[], type=Path,
                       metavar="DIR", help="fit the population check in this build: the model's "
                       "training X-rays against every image in DIR, X-rays the model was not "
                       "made for (repeatable; docs/population-check.md). Without it the check "
                       "fitted beside the checkpoint is shipped, if there is one")
    build.add_argument("--looks-like", default=None, metavar="WORDS",
                       help="with --out-of-population and a checkpoint: what DIR's X-rays are, "
                            "in the verdict's words, e.g. 'an adult chest X-ray' (a config "
                            "says it in [population] looks_like)")
    build.add_argument("--population-epochs", type=int, default=None, metavar="N",
                       help="with --out-of-population: epochs of the check's fit (default "
                            f"{POPULATION_EPOCHS}, as `population fit`)")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    build.set_defaults(func=cmd_build)

    from converters.triton import (
        CPU_ACCELERATORS,
        DEFAULT_MAX_BATCH,
        DEFAULT_OPS_LIBRARY,
        DEFAULT_QUEUE_DELAY_US,
    )

    triton = sub.add_parser(
        "triton", help="write a Triton Inference Server model repository from a bundle",
        description="Write DIR/<model>/config.pbtxt + DIR/<model>/1/<file> for every artifact "
                    "of a bundle (ONNX Runtime backend: TensorRT on the gpu target, OpenVINO "
                    "accelerator on cpu/arm; OpenVINO IR: the openvino backend; dynamic "
                    "batching), plus <model>_<target>_bytes: raw JPEG/PNG bytes in, "
                    "probabilities out (decode and preprocessing inside the graph, built with "
                    "onnxruntime-extensions).")
    triton.add_argument("--bundle", required=True, metavar="B", help="bundle folder (dist/<target>)")
    triton.add_argument("--out", required=True, metavar="DIR", help="model repository folder")
    triton.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH, metavar="N",
                        help=f"largest batch Triton forms (default {DEFAULT_MAX_BATCH})")
    triton.add_argument("--max-queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US,
                        metavar="US", help="how long a request may wait to be batched "
                                           f"(default {DEFAULT_QUEUE_DELAY_US} microseconds)")
    triton.add_argument("--cpu-accelerator", choices=CPU_ACCELERATORS, default="openvino",
                        help="ONNX Runtime accelerator for CPU artifacts (default openvino; none: "
                             "ONNX Runtime's own CPU kernels, for servers built without it)")
    triton.add_argument("--ops-library", default=DEFAULT_OPS_LIBRARY, metavar="PATH",
                        help="absolute path of libortextensions.so on the server, for the "
                             f"bytes-in model (default {DEFAULT_OPS_LIBRARY})")
    triton.add_argument("--no-bytes-in", action="store_true",
                        help="write the tensor models only")
    triton.set_defaults(func=cmd_triton)
    calib = sub.add_parser(
        "calibrate", help="measure a bundle's operating point on a site's labelled X-rays",
        description="Triage the site's labelled X-rays with the bundle (the real runner: same "
                    "decoding, scope rules and error rows), report sensitivity and specificity "
                    "with 95% Wilson intervals at the build threshold and at the site threshold "
                    "(the highest threshold at which at least --sensitivity of the site's "
                    "in-scope positive images are flagged), and write a copy of the bundle "
                    "carrying site_calibration.json (declared in its manifest with its sha256); "
                    "the runtime then triages with the site threshold. Unreadable files are left "
                    "out, out-of-scope images are always flagged and left out of the threshold "
                    "search. Needs at least 50 scored, in-scope images of each class (a "
                    "multi-label model: with and without each finding; its CSV may join several "
                    "labels with | or leave the label empty for none). The "
                    "original bundle is never modified. Exit 0 written, 1 the device answers "
                    "differently from the build, 2 bad input.")
    calib.add_argument("--bundle", type=Path, default=Path("dist/cpu"),
                       help="the bundle to calibrate (default: dist/cpu); only read")
    calib.add_argument("--labelled", type=Path, required=True, metavar="DIR|CSV",
                       help="a folder with one subfolder per class (NORMAL/, PNEUMONIA/), or a "
                            "CSV with path and label columns (paths relative to the CSV's "
                            "folder; a multi-label model's label may join several with |)")
    calib.add_argument("--site", required=True, metavar="NAME",
                       help="the site's name, shown with every result, e.g. \"St Mary's "
                            "paediatrics\"")
    calib.add_argument("--sensitivity", type=float, default=None,
                       help="target sensitivity for the site threshold (default: the one the "
                            "build threshold was chosen for, 0.98 for the reference bundles)")
    calib.add_argument("--out", default=None,
                       help="where the calibrated copy goes (default: <bundle>-site-<name>); an "
                            "earlier calibrated copy there is replaced")
    calib.add_argument("--work", default=None,
                       help="folder for the triage results and labelled_results.csv (default: "
                            "calibration-runs/<name>-<time>); must be new or empty")
    calib.add_argument("--artifact", default=None,
                       help="artifact file name or format key (default: the bundle's default); "
                            "the site threshold applies to this artifact")
    calib.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    calib.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    calib.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    calib.set_defaults(func=cmd_calibrate)

    from converters import population
    from converters.emulation import cli as emulation_cli

    population.add_parser(sub)
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

    errors: tuple[type[BaseException], ...] = (DatasetError, CheckpointError, UnknownTargetError,
                                               UsageError)
    if args.command in ("config", "build"):
        from converters.config.tables import ConfigError

        errors += (ConfigError,)
    if args.command == "build":
        from converters.build import BuildError

        errors += (BuildError,)
    if args.command == "triton":
        from converters.triton import TritonError
        from runtime.errors import BundleError

        errors += (TritonError, BundleError)
    try:
        return args.func(args)
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
