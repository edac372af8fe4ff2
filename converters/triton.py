"""A Triton Inference Server model repository from a bundle (``python -m converters triton``).

Each artifact of the bundle becomes one Triton model, ``DIR/<name>/config.pbtxt`` +
``DIR/<name>/1/<model file>`` (copied after its sha256 is checked against the manifest):

- ONNX artifacts -> the ONNX Runtime backend. An artifact the target runs on TensorRT (the gpu
  target) gets the ``tensorrt`` GPU accelerator with the artifact's precision and an optimisation
  profile for batch 1..max_batch_size; nodes TensorRT cannot take fall back to the CUDA provider,
  which the backend always adds for a GPU instance. A CPU artifact (cpu, arm targets) gets the
  ``openvino`` CPU accelerator (``cpu_accelerator="none"``: ONNX Runtime's own CPU kernels).
- OpenVINO IR artifacts -> the OpenVINO backend (``model.xml`` + ``model.bin``).
- ORT-format artifacts (``.ort``, for minimal builds) are skipped: their ``.onnx`` twin is served.

Every tensor model gets ``max_batch_size`` and ``dynamic_batching`` with a short queue delay; input
and output names, types and dims are read from the artifact's own graph. With
``onnxruntime-extensions`` installed, one more model, ``<name>_bytes``, takes the raw JPEG/PNG file
(:mod:`converters.bytes_in`); it needs the extensions' custom-op library on the server
(``model_operations { op_library_filename }``, :data:`DEFAULT_OPS_LIBRARY`).

Configs are built as Triton's ``ModelConfig`` protobuf (shipped in ``tritonclient``) and written
with ``text_format``, so a written config always parses.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from runtime.bundle.artifacts import read_manifest
from runtime.bundle.files import is_inside, verify_artifact
from runtime.contract.formats import get_format
from runtime.contract.manifest import ArtifactEntry, Manifest

DEFAULT_MAX_BATCH = 32
#: how long Triton may hold a request to batch it with others (0.5 ms)
DEFAULT_QUEUE_DELAY_US = 500
#: where the server finds libortextensions.so (the native onnxruntime-extensions library, built
#: for the ONNX Runtime of the Triton release; the Python wheel's library needs an interpreter)
DEFAULT_OPS_LIBRARY = "/opt/tritonserver/ortextensions/libortextensions.so"
CPU_ACCELERATORS = ("openvino", "none")
#: the ONNX artifact the bytes-in model wraps: the first of these the bundle has
BYTES_IN_PREFERENCE = ("onnx-fp32", "onnx-fp16", "onnx-int8")
#: TensorRT's optimisation-profile workspace (the backend's own default, 1 GiB)
TRT_WORKSPACE_BYTES = str(1 << 30)
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64",
                 "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int32": "TYPE_INT32",
                 "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
INSTALL_HINT = "install the Triton extra: pip install -e '.[triton]'"


class TritonError(ValueError):
    """A bundle, artifact or option the Triton repository cannot be written for."""


@dataclass(frozen=True)
class TensorIO:
    """One input or output of a model graph: ``shape`` uses -1 for a dynamic dimension."""

    name: str
    dtype: str  # numpy name, e.g. "float32"
    shape: list[int]


@dataclass
class WrittenModel:
    """One Triton model of the repository."""

    name: str
    backend: str
    source: str  # the bundle artifact it serves
    config: Path
    files: list[Path]
    summary: str


@dataclass
class TritonRepository:
    """What :func:`write_repository` wrote, left out (and why) and checked."""

    root: Path
    models: list[WrittenModel] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (artifact, why)
    notes: list[str] = field(default_factory=list)


@cache
def model_config_pb2():
    """Triton's model-config protobuf module, as shipped in ``tritonclient``.

    ``tritonclient.grpc``'s package imports the gRPC client (grpcio); the generated module itself
    needs only protobuf, so it is loaded from its file when grpcio is not installed.
    """
    try:
        from tritonclient.grpc import model_config_pb2 as module

        return module
    except RuntimeError:  # tritonclient without its [grpc] extra
        pass
    except ImportError as exc:
        raise TritonError(f"tritonclient is not installed; {INSTALL_HINT}") from exc
    spec = importlib.util.find_spec("tritonclient")
    path = Path(spec.origin).parent / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("tritonclient_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    sys.modules[module_spec.name] = module
    return module


def parse_config(text: str):
    """A ``config.pbtxt`` text -> ``ModelConfig`` (raises on anything Triton would not parse)."""
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_pb2().ModelConfig())


# ------------------------------------------------------------------------------------------
# what the artifacts declare


def onnx_io(path: Path) -> tuple[list[TensorIO], list[TensorIO]]:
    """Inputs and outputs of an ONNX graph (weights not loaded)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)

    def describe(values) -> list[TensorIO]:
        out = []
        for value in values:
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            out.append(TensorIO(value.name, helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
                                dims))
        return out

    initializers = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    return describe(inputs), describe(model.graph.output)


def openvino_io(path: Path) -> tuple[list[TensorIO], list[TensorIO]]:
    """Inputs and outputs of an OpenVINO IR (``.xml``)."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise TritonError(f"{path.name} is an OpenVINO IR and openvino is not installed; "
                          "pip install -e '.[openvino]'") from exc
    model = ov.Core().read_model(str(path))

    def describe(ports) -> list[TensorIO]:
        out = []
        for port in ports:
            dims = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
            dtype = port.get_element_type().to_dtype().name
            out.append(TensorIO(port.get_any_name(), dtype, dims))
        return out

    return describe(model.inputs), describe(model.outputs)


def triton_type(dtype: str) -> str:
    try:
        return _TRITON_TYPES[dtype]
    except KeyError:
        raise TritonError(f"tensor type {dtype} has no Triton counterpart here "
                          f"(known: {', '.join(_TRITON_TYPES)})") from None


# ------------------------------------------------------------------------------------------
# configs


def _add_tensors(config, inputs: list[TensorIO], outputs: list[TensorIO], batched: bool) -> None:
    for io, into in [(t, config.input) for t in inputs] + [(t, config.output) for t in outputs]:
        dims = io.shape[1:] if batched else io.shape
        if batched and io.shape[:1] != [-1]:
            raise TritonError(f"{io.name} has a fixed first dimension {io.shape[:1]}; dynamic "
                              "batching needs a dynamic batch dimension: rebuild the bundle")
        entry = into.add(name=io.name, data_type=triton_type(io.dtype))
        entry.dims.extend(dims)


def _on_gpu(entry: ArtifactEntry) -> bool:
    return any(p in _GPU_PROVIDERS for p in entry.providers)


def _tensorrt(entry: ArtifactEntry, image: TensorIO, max_batch: int) -> dict[str, str]:
    """The backend's TensorRT accelerator parameters for ``entry`` (batch 1..max_batch)."""
    per_item = "x".join(str(d) for d in image.shape[1:])
    return {"precision_mode": "FP16" if entry.precision == "fp16" else "FP32",
            "max_workspace_size_bytes": TRT_WORKSPACE_BYTES,
            "trt_profile_min_shapes": f"{image.name}:1x{per_item}",
            "trt_profile_opt_shapes": f"{image.name}:{max_batch}x{per_item}",
            "trt_profile_max_shapes": f"{image.name}:{max_batch}x{per_item}"}


def tensor_model_config(name: str, entry: ArtifactEntry, inputs: list[TensorIO],
                        outputs: list[TensorIO], max_batch: int, queue_delay_us: int,
                        cpu_accelerator: str):
    """The ``ModelConfig`` of one tensor artifact (batched, dynamic batching)."""
    pb = model_config_pb2()
    config = pb.ModelConfig(name=name, max_batch_size=max_batch)
    config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    _add_tensors(config, inputs, outputs, batched=True)
    gpu = _on_gpu(entry)
    config.instance_group.add(count=1, kind=pb.ModelInstanceGroup.KIND_GPU if gpu
                              else pb.ModelInstanceGroup.KIND_CPU)
    if entry.engine == "openvino":
        config.backend = "openvino"
        config.parameters["PERFORMANCE_HINT"].string_value = "LATENCY"
        config.parameters["NUM_STREAMS"].string_value = "1"
        return config
    config.backend = "onnxruntime"
    accelerators = config.optimization.execution_accelerators
    if "TensorrtExecutionProvider" in entry.providers:
        accelerator = accelerators.gpu_execution_accelerator.add(name="tensorrt")
        for key, value in _tensorrt(entry, inputs[0], max_batch).items():
            accelerator.parameters[key] = value
    elif not gpu and cpu_accelerator == "openvino":
        accelerators.cpu_execution_accelerator.add(name="openvino")
    return config


def bytes_in_config(name: str, entry: ArtifactEntry, outputs: list[TensorIO], ops_library: str):
    """The ``ModelConfig`` of the bytes-in model: one encoded image per request, no batching
    (every request has its own length and image size); custom ops from ``ops_library``."""
    from converters.bytes_in import INPUT_NAME

    pb = model_config_pb2()
    config = pb.ModelConfig(name=name, backend="onnxruntime", max_batch_size=0)
    _add_tensors(config, [TensorIO(INPUT_NAME, "uint8", [-1])], outputs, batched=False)
    config.instance_group.add(count=1, kind=pb.ModelInstanceGroup.KIND_GPU if _on_gpu(entry)
                              else pb.ModelInstanceGroup.KIND_CPU)
    config.model_operations.op_library_filename.append(ops_library)
    return config


def write_config(config, folder: Path, header: list[str]) -> Path:
    """``folder/config.pbtxt``: ``#`` header lines, then the text format (checked by parsing)."""
    from google.protobuf import text_format

    text = "".join(f"# {line}\n" for line in header) + text_format.MessageToString(config)
    parse_config(text)
    path = folder / "config.pbtxt"
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------
# the repository


def model_name(manifest: Manifest, kind: str) -> str:
    """``<model>_<target>_<kind>`` in one word, e.g. ``pneumonia_cnn_gpu_onnx_fp32`` for the
    ``onnx-fp32`` artifact, ``pneumonia_cnn_gpu_bytes`` for the bytes-in model."""
    return f"{manifest.model.name}_{manifest.target}_{kind}".replace("-", "_")


def _model_folder(root: Path, name: str) -> Path:
    """``root/name`` made empty: a folder of an earlier run (it has a config.pbtxt) is replaced,
    anything else there is refused."""
    folder = root / name
    if folder.exists():
        if not (folder / "config.pbtxt").is_file():
            raise TritonError(f"{folder} exists and is not a Triton model folder; choose another "
                              "--out or move it away")
        shutil.rmtree(folder)
    (folder / "1").mkdir(parents=True)
    return folder


def _copy_artifact(entry: ArtifactEntry, sources: list[Path], version: Path) -> list[Path]:
    """Copy the verified files of ``entry`` (``sources``, main file first) into ``version/``: the main file as ``model`` + its
    suffix (``.onnx`` / ``.xml``, the backends' default names), an IR's weights as
    ``model.bin``, anything else (ONNX external data) under its own name."""
    main = Path(entry.path)
    written = []
    for source in sources:
        if source.name == main.name:
            target = version / ("model" + main.suffix)
        elif entry.engine == "openvino" and source.suffix == ".bin":
            target = version / "model.bin"
        else:
            target = version / source.name
        shutil.copyfile(source, target)
        written.append(target)
    return written


def _header(manifest: Manifest, entry: ArtifactEntry, what: str) -> list[str]:
    lines = [f"{what}", f"written by `python -m converters triton` from a {manifest.target} "
             f"bundle ({entry.path} sha256 {entry.sha256[:16]}...)"]
    classes = manifest.model.classes
    for finding, threshold in manifest.thresholds().items():
        lines.append(f"threshold for {finding}: {threshold:.6f} (probability at or above it is "
                     f"flagged; output index {classes.index(finding)})")
    if len(manifest.model.finding_labels) > 1:
        lines.append("a case is flagged when any finding reaches its threshold")
    return lines


def write_repository(bundle: str | Path, out: str | Path, *, max_batch: int = DEFAULT_MAX_BATCH,
                     queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                     cpu_accelerator: str = "openvino", bytes_in: bool = True,
                     ops_library: str = DEFAULT_OPS_LIBRARY) -> TritonRepository:
    """Write the Triton model repository of ``bundle`` into ``out`` (see the module docstring)."""
    bundle, out = Path(bundle), Path(out)
    if max_batch < 1:
        raise TritonError(f"--max-batch-size must be at least 1, got {max_batch}")
    if queue_delay_us < 0:
        raise TritonError(f"--max-queue-delay-us must be >= 0, got {queue_delay_us}")
    if cpu_accelerator not in CPU_ACCELERATORS:
        raise TritonError(f"unknown CPU accelerator {cpu_accelerator!r}; expected one of "
                          f"{', '.join(CPU_ACCELERATORS)}")
    if not ops_library.startswith("/"):
        raise TritonError(f"--ops-library must be an absolute path on the Triton server, got "
                          f"{ops_library!r}")
    manifest = read_manifest(bundle)
    if is_inside(out, bundle):
        raise TritonError(f"--out {out} is inside the bundle {bundle}; a bundle is never written "
                          "to: choose a folder elsewhere")
    model_config_pb2()  # fail early, before anything is written, when tritonclient is missing
    # every file checked against the manifest before anything is written
    verified = {entry.path: verify_artifact(bundle, entry) for entry in manifest.artifacts}
    repo = TritonRepository(out)
    out.mkdir(parents=True, exist_ok=True)
    for entry in manifest.artifacts:
        if Path(entry.path).suffix == ".ort":
            repo.skipped.append((entry.path, "ORT format is for minimal/mobile builds; Triton "
                                             "serves its .onnx twin"))
            continue
        repo.models.append(_write_tensor_model(manifest, entry, verified[entry.path], out,
                                               max_batch, queue_delay_us, cpu_accelerator))
    if bytes_in:
        _write_bytes_in(bundle, manifest, out, ops_library, repo)
    return repo


def _write_tensor_model(manifest: Manifest, entry: ArtifactEntry, sources: list[Path], out: Path,
                        max_batch: int, queue_delay_us: int, cpu_accelerator: str) -> WrittenModel:
    name = model_name(manifest, entry.format)
    folder = _model_folder(out, name)
    files = _copy_artifact(entry, sources, folder / "1")
    main = files[0]
    inputs, outputs = openvino_io(main) if entry.engine == "openvino" else onnx_io(main)
    config = tensor_model_config(name, entry, inputs, outputs, max_batch, queue_delay_us,
                                 cpu_accelerator)
    what = f"{entry.format} ({entry.precision}): {entry.engine} backend, dynamic batching"
    path = write_config(config, folder, _header(manifest, entry, what))
    accelerators = config.optimization.execution_accelerators
    used = [a.name for a in list(accelerators.gpu_execution_accelerator)
            + list(accelerators.cpu_execution_accelerator)]
    summary = (f"{config.backend}{' + ' + ', '.join(used) if used else ''}, "
               f"{'GPU' if _on_gpu(entry) else 'CPU'}, max batch {max_batch}, queue delay "
               f"{queue_delay_us} us")
    return WrittenModel(name, config.backend, entry.path, path, files, summary)


def _bytes_in_entry(manifest: Manifest) -> ArtifactEntry | None:
    for key in BYTES_IN_PREFERENCE:
        for entry in manifest.artifacts:
            if entry.format == key:
                return entry
    return None


def _write_bytes_in(bundle: Path, manifest: Manifest, out: Path, ops_library: str,
                    repo: TritonRepository) -> None:
    """The bytes-in model, checked on the bundle's reference images before it is kept."""
    from converters import bytes_in

    if importlib.util.find_spec("onnxruntime_extensions") is None:
        repo.skipped.append(("bytes-in", f"onnxruntime-extensions is not installed; {INSTALL_HINT}"))
        return
    entry = _bytes_in_entry(manifest)
    if entry is None:
        repo.skipped.append(("bytes-in", "the bundle has no ONNX artifact ("
                             + ", ".join(BYTES_IN_PREFERENCE) + ") to wrap"))
        return
    source = verify_artifact(bundle, entry)[0]
    try:
        graph = bytes_in.build_bytes_in(source, manifest.preprocessing)
    except bytes_in.BytesInError as exc:
        repo.skipped.append(("bytes-in", str(exc)))
        return
    serialized = graph.SerializeToString()
    check = _check_bytes_in(bundle, manifest, entry, serialized)
    if check is not None:
        if not check.passed:
            raise TritonError(f"the bytes-in graph answers differently from {entry.path} on the "
                              f"bundle's reference images (max |dp| {check.max_abs_diff:.2e} > "
                              f"{check.tolerance:.0e}); nothing was written for it")
        repo.notes.append(f"bytes-in graph on the {check.n} reference images (as PNG): max |dp| "
                          f"{check.max_abs_diff:.1e} vs {entry.path} at build (tolerance "
                          f"{check.tolerance:.0e})")
    name = model_name(manifest, "bytes")
    folder = _model_folder(out, name)
    model_file = folder / "1" / "model.onnx"
    model_file.write_bytes(serialized)
    _, outputs = onnx_io(model_file)
    config = bytes_in_config(name, entry, outputs, ops_library)
    what = (f"raw JPEG/PNG bytes in, probabilities out: decode + the manifest's preprocessing + "
            f"{entry.path}; custom ops from {ops_library}")
    path = write_config(config, folder, _header(manifest, entry, what))
    summary = (f"onnxruntime + onnxruntime-extensions ops, {'GPU' if _on_gpu(entry) else 'CPU'}, "
               f"one image per request (max_batch_size 0), wraps {entry.path}")
    repo.models.append(WrittenModel(name, "onnxruntime", entry.path, path, [model_file], summary))


def _check_bytes_in(bundle: Path, manifest: Manifest, entry: ArtifactEntry, serialized: bytes):
    """The bytes-in graph against the artifact's build-time answers (None: no reference set)."""
    from converters.bytes_in import check_against_reference, session
    from runtime.bundle.selfcheck import load_reference_set

    if manifest.reference_set is None or entry.path not in manifest.reference_set.artifacts:
        return None
    ref = load_reference_set(bundle, manifest)
    return check_against_reference(session(serialized), ref.inputs, ref.probabilities[entry.path],
                                   manifest.preprocessing, get_format(entry.format).device_tolerance)
