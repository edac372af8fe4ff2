"""``converters build --out-of-population``: the build fits the population check itself, with
the same code as ``population fit``, on a config's training X-rays against real adult X-rays,
ships it in the bundle (manifest, sha256, report with the fit's card) and triage uses it in the
config's words. Without the flag and without a check beside the weights the build says so in
one line. Small and seeded: the examples' ResNet-18 at 64 px (weights: a probe on 200 training
X-rays), the gpu target (FP32 and FP16, no INT8 calibration), a short fit of the check."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import pytest

from converters.__main__ import main as converters_main
from converters.population import DEFAULT_LOOKS_LIKE, NO_CHECK
from runtime.__main__ import main as runtime_main
from tests.converters.labelled_csv import manifest_rows, subset, write_csv
from tests.converters.test_model_config_examples import make_weights
from tests.converters.vision import vision

LOOKS_LIKE = "an adult chest X-ray"
#: validation, test and training X-rays per label; NIH adults fitted on, and others never seen
VAL, TEST, TRAIN, ADULTS, UNSEEN = 40, 30, 150, 120, 24
EPOCHS = 10  # of the check's fit: about 60 steps of 64 thumbnails





def _copies(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for path in files:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def config(tmp_path_factory, data_dir: Path) -> dict:
    """The resnet18_64 example with small real splits, and a folder of real NIH adults."""
    vision("torchvision")
    root = tmp_path_factory.mktemp("population-build")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CXR_DATA_DIR", str(data_dir))
        [path] = make_weights().make(root, ["resnet18_64"], probe_images=200, epochs=0)
    samples = data_dir / "cxr_samples"
    every = [{"path": str(p.relative_to(samples)), "label": p.parent.name}
             for p in sorted(samples.glob("*/*.jpeg"))]
    val = write_csv(root / "val.csv", subset(every, VAL, 0))
    train_dir, test_dir = data_dir / "kermany_train_224", data_dir / "kermany_test_224"
    train = write_csv(root / "train.csv", subset(manifest_rows(train_dir), TRAIN, 3))
    test = write_csv(root / "test.csv", subset(manifest_rows(test_dir), TEST, 2))
    text = path.read_text()
    text = text[:text.index("\n[population]")] + (
        f'\n[population]\nage_years = [1, 5]\nlooks_like = "{LOOKS_LIKE}"\n\n[data]\n'
        f'val = {{ csv = "{val}", images = "{samples}" }}\n'
        f'test = {{ csv = "{test}", images = "{test_dir}" }}\n'
        f'train = {{ csv = "{train}", images = "{train_dir}" }}\n')
    path.write_text(text)
    adults = random.Random(4).sample(sorted((data_dir / "adult_cxr" / "nih").glob("*.jpeg")),
                                     ADULTS + UNSEEN)
    return {"path": path, "root": root, "samples": samples,
            "adults": _copies(adults[:ADULTS], root / "nih"),
            "unseen": _copies(adults[ADULTS:], root / "nih-unseen")}


@pytest.fixture(scope="module")
def bundle(config: dict) -> Path:
    out = config["root"] / "dist"
    assert converters_main(["build", "--config", str(config["path"]), "--target", "gpu",
                            "--out", str(out), "--out-of-population", str(config["adults"]),
                            "--population-epochs", str(EPOCHS), "--quiet"]) == 0
    return out / "gpu"


def test_the_build_fits_ships_and_reports_the_check(bundle: Path):
    manifest = json.loads((bundle / "manifest.json").read_text())
    check = manifest["population_check"]
    assert check["looks_like"] == LOOKS_LIKE  # the config's [population] looks_like
    assert check["val_in_scope"] >= 0.98 and check["val_n"] == 2 * VAL  # the limit: validation
    card = check["card"]
    assert card["epochs"] == EPOCHS and card["limit"] == check["limit"]
    assert f"out of population: nih ({ADULTS})" in card["fitted_on"]
    assert "in population: train: " in card["fitted_on"] and f"({2 * TRAIN})" in card["fitted_on"]
    assert card["in_scope"]["nih"]["in_scope"] < 0.5  # the adults it was fitted on
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    assert listed["population_check.onnx"] == check["sha256"]
    report = (bundle / "report.md").read_text()
    assert "## Population check" in report and "| nih (fitted on: in-sample) | " in report
    assert runtime_main(["verify", str(bundle)]) == 0


def test_triage_puts_adults_it_never_saw_out_in_the_configs_words(bundle: Path, config: dict):
    out = config["root"] / "triage"
    folder = config["root"] / "mixed"
    shutil.copytree(config["unseen"], folder / "adults")
    children = sorted(config["samples"].glob("NORMAL/*.jpeg"))[-12:]  # not all in validation
    _copies(children, folder / "children")
    assert runtime_main(["triage", str(folder), "--bundle", str(bundle), "--out", str(out),
                         "--quiet", "--workers", "1"]) == 0
    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_who = {who: [r for r in rows if r["path"].startswith(who)] for who in ("adults",
                                                                              "children")}
    said = [r for r in by_who["adults"] if f"looks like {LOOKS_LIKE}" in r["scope_reason"]]
    assert len(said) >= 0.75 * UNSEEN, [r["scope_reason"] for r in by_who["adults"]]
    assert all(r["scope"] == "out" for r in said)
    kept = [r for r in by_who["children"] if "population check" not in r["scope_reason"]]
    assert len(kept) >= 10, [r["scope_reason"] for r in by_who["children"]]


def test_a_build_without_a_check_says_how_to_add_one(config: dict, capsys):
    out = config["root"] / "dist-bare"
    assert converters_main(["build", "--config", str(config["path"]), "--target", "gpu",
                            "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert NO_CHECK in printed and NO_CHECK.count("\n") == 0
    assert "population_check" not in json.loads((out / "gpu" / "manifest.json").read_text())


def test_population_options_are_checked_before_any_work(config: dict, capsys, tmp_path):
    base = ["build", "--config", str(config["path"]), "--target", "gpu", "--out",
            str(tmp_path)]
    assert converters_main(base + ["--looks-like", "x"]) == 2
    assert "go with --out-of-population" in capsys.readouterr().err
    assert converters_main(base + ["--out-of-population", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert converters_main(base + ["--out-of-population", str(config["adults"]),
                                   "--looks-like", "x"]) == 2
    assert "[population] looks_like" in capsys.readouterr().err
    assert DEFAULT_LOOKS_LIKE and not list(tmp_path.iterdir())  # nothing was written
