"""The Triton model repository (``python -m converters triton``) and its bytes-in graph.

Configs are parsed with Triton's own model-config protobuf (``tritonclient``); the bytes-in
graph is run by ONNX Runtime with the onnxruntime-extensions library on real JPEGs and compared
with the runtime's decode + preprocess + engine on the same files.

Measured (both reference models, ``model.fp32.onnx``, positive-class probability, bytes-in graph
vs ``python -m runtime triage`` results.csv): on the 350 full-size JPEGs of cxr_samples, against
triage's default reduced JPEG decode: max |dp| 0.0159 (28 px model; mean 7.7e-4) and 1.7e-3
(128 px clinical model); against ``--exact-decode``: 4.1e-4 and 2.2e-4; on the 624 JPEGs of
kermany_test_224: 5.0e-7 for both (the 6 decimals of results.csv); no decision changed at the
bundle threshold. The tolerances below are those maxima with a margin.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient")
pytest.importorskip("onnxruntime_extensions")

from converters.__main__ import main  # noqa: E402
from converters.bytes_in import BytesInError, build_bytes_in, probabilities, session  # noqa: E402
from converters.triton import (
    model_config_pb2,
    model_name,
    onnx_io,
    openvino_io,
    parse_config,  # noqa: E402
    write_repository,
)
from runtime.preprocess.cpu import normalize  # noqa: E402  # noqa: E402

#: bytes-in graph vs the runtime decoding the whole JPEG (measured max 5.1e-4)
FULL_DECODE_TOLERANCE = 2e-3
#: bytes-in graph vs triage's default reduced JPEG decode: the decode scale's own difference (the
#: runtime's full vs default decode on these files, FP32: max 0.0589 at DEFAULT_OVERSAMPLE 3;
#: benchmarks/reports/decode_scale.md) plus the full-decode tolerance
TRIAGE_TOLERANCE = 0.07
#: real files: grayscale and RGB full-size JPEGs (incl. the measured worst cases) and 224 px ones
SAMPLES = ("NORMAL/IM-0172-0001.jpeg", "NORMAL/NORMAL2-IM-0927-0001.jpeg",
           "PNEUMONIA/person1551_bacteria_4053.jpeg", "PNEUMONIA/person1589_bacteria_4172.jpeg",
           "PNEUMONIA/person1253_bacteria_3211.jpeg")
KERMANY_224 = 4


@pytest.fixture(scope="module")
def gpu_repo(tmp_path_factory, built_bundles) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(built_bundles["gpu"], out)
    return out


@pytest.fixture(scope="module")
def cpu_repo(tmp_path_factory, built_bundles) -> Path:
    out = tmp_path_factory.mktemp("triton-cpu") / "repo"
    write_repository(built_bundles["cpu"], out)
    return out


def _configs(repo: Path) -> dict[str, object]:
    return {folder.name: parse_config((folder / "config.pbtxt").read_text(encoding="utf-8"))
            for folder in sorted(repo.iterdir())}


def _by_kind(repo: Path, bundle: Path) -> dict[str, object]:
    """The repository's configs by format key (or "bytes"), after checking the folder names."""
    from runtime.contract.manifest import load_manifest

    manifest = load_manifest(bundle)
    kinds = [a.format for a in manifest.artifacts if not a.path.endswith(".ort")] + ["bytes"]
    configs = _configs(repo)
    assert sorted(configs) == sorted(model_name(manifest, kind) for kind in kinds)
    return {kind: configs[model_name(manifest, kind)] for kind in kinds}


def test_every_config_parses_with_tritons_model_config(gpu_repo: Path, cpu_repo: Path,
                                                       built_bundles):
    pb = model_config_pb2()
    gpu = _by_kind(gpu_repo, built_bundles["gpu"])
    cpu = _by_kind(cpu_repo, built_bundles["cpu"])
    assert sorted(gpu) == ["bytes", "onnx-fp16", "onnx-fp32"]
    assert sorted(cpu) == ["bytes", "onnx-int8", "openvino-fp32", "openvino-int8"]
    for repo, configs in ((gpu_repo, gpu), (cpu_repo, cpu)):
        for kind, config in configs.items():
            assert isinstance(config, pb.ModelConfig)
            files = list((repo / config.name / "1").iterdir())
            assert files and all(f.is_file() and not f.is_symlink() for f in files)
            if kind == "bytes":
                assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
                assert config.model_operations.op_library_filename[0].endswith(
                    "libortextensions.so")
            else:
                assert config.max_batch_size == 32
                assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 1000


def test_backends_and_accelerators_follow_the_target(gpu_repo: Path, cpu_repo: Path,
                                                      built_bundles):
    pb = model_config_pb2()
    gpu = _by_kind(gpu_repo, built_bundles["gpu"])
    cpu = _by_kind(cpu_repo, built_bundles["cpu"])
    fp16 = gpu["onnx-fp16"]
    assert fp16.backend == "onnxruntime"
    assert fp16.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    trt = fp16.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert trt.parameters["trt_profile_max_shapes"] == "image:32x1x28x28"
    fp32 = gpu["onnx-fp32"].optimization.execution_accelerators
    assert fp32.gpu_execution_accelerator[0].parameters["precision_mode"] == "FP32"
    int8 = cpu["onnx-int8"]
    assert int8.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert [a.name for a in int8.optimization.execution_accelerators
            .cpu_execution_accelerator] == ["openvino"]
    ir = cpu["openvino-int8"]
    assert ir.backend == "openvino"
    assert sorted(p.name for p in (cpu_repo / ir.name / "1").iterdir()) == ["model.bin",
                                                                          "model.xml"]


def test_names_and_dims_match_the_artifacts(gpu_repo: Path, cpu_repo: Path, built_bundles):
    """Read each bundle artifact's graph independently and compare with its config."""
    from runtime.contract.manifest import load_manifest

    pb = model_config_pb2()
    for target, repo in (("gpu", gpu_repo), ("cpu", cpu_repo)):
        bundle = built_bundles[target]
        manifest = load_manifest(bundle)
        configs = _by_kind(repo, bundle)
        for entry in manifest.artifacts:
            config = configs[entry.format]
            read = openvino_io if entry.engine == "openvino" else onnx_io
            inputs, outputs = read(bundle / entry.path)
            for declared, actual in ((config.input, inputs), (config.output, outputs)):
                assert [t.name for t in declared] == [t.name for t in actual]
                assert [list(t.dims) for t in declared] == [t.shape[1:] for t in actual]
                assert all(t.data_type == pb.TYPE_FP32 for t in declared)
            size = manifest.preprocessing.size
            assert list(config.input[0].dims) == [1, size, size]
            assert list(config.output[0].dims) == [len(manifest.model.classes)]


def test_copied_models_answer_like_the_bundle(cpu_repo: Path, built_bundles):
    """The renamed copies (IR as model.xml + model.bin, ONNX as model.onnx) give the build's
    probabilities on the bundle's reference images."""
    import onnxruntime as ort
    import openvino as ov

    from runtime.bundle.selfcheck import load_reference_set
    from runtime.contract.manifest import load_manifest

    bundle = built_bundles["cpu"]
    manifest = load_manifest(bundle)
    ref = load_reference_set(bundle, manifest)
    configs = _by_kind(cpu_repo, bundle)
    entry = manifest.artifact("model.fp32.xml")
    compiled = ov.Core().compile_model(str(cpu_repo / configs[entry.format].name / "1" / "model.xml"),
                                       "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(ref.inputs)[compiled.output(0)]
    assert np.abs(got - ref.probabilities[entry.path]).max() <= 1e-3
    entry = manifest.artifact("model.int8.onnx")
    onnx_copy = cpu_repo / configs[entry.format].name / "1" / "model.onnx"
    got = ort.InferenceSession(str(onnx_copy), providers=["CPUExecutionProvider"]).run(
        None, {"image": ref.inputs})[0]
    assert np.abs(got - ref.probabilities[entry.path]).max() <= 1e-3


def _runtime_probability(bundle, path: Path, reduce_to: int | None, spec=None) -> float:
    """What triage computes for one file: runtime.running.triage.load_one, normalize, the engine."""
    from runtime.running.triage import Entry, load_one

    spec = spec or bundle.preprocessing
    loaded = load_one(Entry(path, path.name), spec, reduce_to, windows=False)
    assert not loaded.error, loaded.error
    return float(bundle.probabilities(normalize(loaded.pixels[None], spec))[0, bundle.positive_index])


@pytest.fixture(scope="module")
def fp32_bundle(built_bundles):
    from runtime.bundle.load import load_bundle

    return load_bundle(built_bundles["gpu"], artifact="model.fp32.onnx", device="cpu")


def _real_files(data_dir: Path) -> list[Path]:
    files = [data_dir / "cxr_samples" / name for name in SAMPLES]
    for label in ("NORMAL", "PNEUMONIA"):
        files += sorted((data_dir / "kermany_test_224" / label).glob("*.jpeg"))[:KERMANY_224 // 2]
    return files


def test_bytes_in_graph_matches_the_runtime_on_real_jpegs(gpu_repo: Path, fp32_bundle, data_dir):
    """The repository's bytes-in model (tiny model: centre-square crop) on grayscale and RGB
    JPEGs, against the runtime's full decode and its default reduced decode."""
    from runtime.running.triage import DEFAULT_OVERSAMPLE

    name = model_name(fp32_bundle.manifest, "bytes")
    sess = session(gpu_repo / name / "1" / "model.onnx")
    spec = fp32_bundle.preprocessing
    assert spec.crop == "center-square"
    full, triage = [], []
    for path in _real_files(data_dir):
        p = float(probabilities(sess, path.read_bytes())[fp32_bundle.positive_index])
        full.append(abs(p - _runtime_probability(fp32_bundle, path, None)))
        triage.append(abs(p - _runtime_probability(fp32_bundle, path, spec.size * DEFAULT_OVERSAMPLE)))
    assert max(full) <= FULL_DECODE_TOLERANCE, full
    assert max(triage) <= TRIAGE_TOLERANCE, triage


def test_bytes_in_graph_without_crop(fp32_bundle, built_bundles, data_dir):
    """crop 'none' (the clinical model's): the whole image resized, as the runtime does."""
    spec = replace(fp32_bundle.preprocessing, crop="none")
    graph = build_bytes_in(built_bundles["gpu"] / "model.fp32.onnx", spec)
    decoder = next(n for n in graph.graph.node if n.op_type == "DecodeImage")
    # the default ("bgr") crashes on grayscale JPEGs in onnxruntime-extensions 0.15.2
    assert [(a.name, a.s) for a in decoder.attribute] == [("color_space", b"rgb")]
    sess = session(graph.SerializeToString())
    diffs = []
    for path in _real_files(data_dir)[:3]:  # non-square full-size X-rays
        p = float(probabilities(sess, path.read_bytes())[fp32_bundle.positive_index])
        diffs.append(abs(p - _runtime_probability(fp32_bundle, path, None, spec)))
    assert max(diffs) <= FULL_DECODE_TOLERANCE, diffs


def test_bytes_in_refuses_what_it_does_not_implement(built_bundles):
    from runtime.contract.manifest import Preprocessing

    with pytest.raises(BytesInError, match="'area' resize only"):
        build_bytes_in(built_bundles["gpu"] / "model.fp32.onnx",
                       Preprocessing(interpolation="linear"))


def test_cli_writes_the_repository_and_says_where(built_bundles, tmp_path, capsys):
    out = tmp_path / "repo"
    assert main(["triton", "--bundle", str(built_bundles["arm"]), "--out", str(out),
                 "--cpu-accelerator", "none"]) == 0
    printed = capsys.readouterr().out
    config = _by_kind(out, built_bundles["arm"])["onnx-int8"]
    assert f"wrote {out / config.name / 'config.pbtxt'}" in printed
    assert f"wrote {out / config.name / '1' / 'model.onnx'}" in printed
    assert "bytes-in graph on the 64 reference images" in printed
    assert not config.optimization.execution_accelerators.cpu_execution_accelerator


def test_bad_bundle_is_refused(built_bundles, tmp_path, capsys):
    bundle = tmp_path / "gpu"
    shutil.copytree(built_bundles["gpu"], bundle)
    model = bundle / "model.fp16.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    out = tmp_path / "repo"
    assert main(["triton", "--bundle", str(bundle), "--out", str(out)]) == 2
    assert "failed its sha256 check" in capsys.readouterr().err
    assert not out.exists()  # every file is checked before anything is written
    assert main(["triton", "--bundle", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "bundle folder not found" in capsys.readouterr().err
    assert main(["triton", "--bundle", str(built_bundles["gpu"]),
                 "--out", str(built_bundles["gpu"] / "triton")]) == 2
    assert "is never written to" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["triton", "--help"])
    assert exc.value.code == 0
    assert "--ops-library" in capsys.readouterr().out
