"""The target registry: declarative profiles, listing, did-you-mean for unknown names."""

from __future__ import annotations

import pytest

from targets import (ArtifactSpec, TargetProfile, UnknownTargetError, all_targets, get_target,
                     register, target_names)


def test_the_three_targets_are_registered():
    assert {"gpu", "cpu", "arm"} <= set(target_names())
    assert [p.name for p in all_targets()] == target_names()


@pytest.mark.parametrize("wrong,suggested", [("cpuu", "cpu"), ("GPU", "gpu"), ("arn", "arm")])
def test_unknown_target_gets_a_did_you_mean(wrong, suggested):
    with pytest.raises(UnknownTargetError) as info:
        get_target(wrong)
    assert f"Did you mean {suggested!r}?" in str(info.value)
    assert "Known targets:" in str(info.value)


def test_unknown_target_without_a_close_name():
    with pytest.raises(UnknownTargetError) as info:
        get_target("quantum")
    assert "Did you mean" not in str(info.value)


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError):
        register(TargetProfile("cpu", "again", (), "cpu"))


@pytest.mark.parametrize("profile", all_targets(), ids=lambda p: p.name)
def test_profiles_are_consistent(profile):
    names = [a.filename for a in profile.artifacts]
    assert len(names) == len(set(names))
    assert profile.default_artifact == "fastest" or profile.default_artifact in names
    assert 0.5 < profile.sensitivity <= 1.0
    assert profile.preprocessing_backend in ("gpu", "cpu")
    for spec in profile.artifacts:
        assert spec.engine in ("onnxruntime", "openvino")
        assert spec.precision in ("fp32", "fp16", "int8")
        if spec.engine == "onnxruntime":
            assert spec.providers and spec.providers[-1] == "CPUExecutionProvider"
    with pytest.raises(KeyError):
        profile.artifact("missing.bin")


def test_what_each_target_ships():
    gpu, cpu, arm = get_target("gpu"), get_target("cpu"), get_target("arm")
    assert {(a.format, a.precision) for a in gpu.artifacts} == {("onnx", "fp32"), ("onnx", "fp16")}
    assert gpu.artifacts[0].providers[:2] == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert "trt_engine_cache_path" in gpu.artifacts[0].provider_options["TensorrtExecutionProvider"]
    assert {(a.format, a.precision) for a in cpu.artifacts} == {
        ("openvino", "fp32"), ("openvino", "int8"), ("onnx", "int8")}
    assert cpu.default_artifact == "fastest"
    assert {(a.format, a.precision) for a in arm.artifacts} == {("onnx", "int8"), ("ort", "int8")}
    assert arm.artifact("model.int8.onnx").options["activation_type"] == "uint8"


def test_artifact_spec_key():
    assert ArtifactSpec("m.xml", "openvino", "int8", "openvino").key == "openvino-int8"


def test_cli_lists_targets(capsys):
    from converters.__main__ import main

    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name in ("gpu", "cpu", "arm"):
        assert f"\n{name}" in "\n" + out
    assert "model.int8.xml" in out
