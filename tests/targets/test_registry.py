"""The target registry: declarative profiles, listing, did-you-mean for unknown names."""

from __future__ import annotations

import pytest

from targets import (
    TargetProfile,
    UnknownTargetError,
    all_targets,
    get_target,
    register,
    target_names,
)


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
    assert len(profile.formats) == len(set(profile.formats))
    assert profile.preference and set(profile.preference) <= set(profile.formats)
    assert set(profile.optional) <= set(profile.formats)
    # a written bundle always has a default: some preferred format is required
    assert set(profile.preference) - set(profile.optional)
    assert 0.5 < profile.sensitivity <= 1.0
    assert profile.preprocessing_backend in ("gpu", "cpu")


def test_what_each_target_ships():
    gpu, cpu, arm = get_target("gpu"), get_target("cpu"), get_target("arm")
    assert gpu.formats == ("onnx-fp32", "onnx-fp16") and gpu.preference[0] == "onnx-fp16"
    assert set(cpu.formats) == {"openvino-fp32", "openvino-int8", "onnx-int8"}
    assert cpu.preference == ("openvino-int8", "onnx-int8", "openvino-fp32")
    assert cpu.optional == ("openvino-int8", "onnx-int8")  # FP32 is the floor
    assert arm.formats == ("onnx-int8", "ort-int8") and arm.optional == ("ort-int8",)


def test_profiles_import_nothing_of_the_kit():
    import ast
    from pathlib import Path

    import targets

    for path in Path(targets.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert node.module.split(".")[0] not in ("runtime", "converters", "benchmarks",
                                                         "tui"), (path.name, node.module)


def test_cli_lists_targets(capsys):
    from converters.__main__ import main

    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name in ("gpu", "cpu", "arm"):
        assert f"\n{name}" in "\n" + out
    assert "openvino-int8" in out and "default #1" in out
