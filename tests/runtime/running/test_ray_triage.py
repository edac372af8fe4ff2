"""Archive triage on Ray (runtime.running.ray_triage) against the single-process runner on real X-rays.

One local Ray per module (``ray.init(num_cpus=2)``, small object store, no dashboard); the same
folder (Kermany test JPEGs in two class folders, a chest DICOM, a truncated JPEG, a text file) is
triaged by both runners with the same bundle and artifact.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

from runtime.bundle.load import load_bundle
from runtime.running.ray_triage import RaySetupError, check_resources, import_ray, ray_triage
from runtime.running.results import RESULTS
from runtime.running.triage import triage
from tests.runtime.helpers import run_cli

#: Probabilities are written with 6 decimals. Ray hands the engine other batches than the folder
#: runner does (the error rows are left out in other places, batches end elsewhere), and a CPU
#: engine may round a float32 sum differently with the batch size: at most one unit in the last
#: written digit. (Measured: identical on these files with the cpu bundle's default artifact.)
PROBABILITY_TOLERANCE = 1e-6
#: an adult's X-ray in the archive: out of scope by the population check
ADULT = "adult.jpeg"
#: what a row must say identically in both runners (everything but the probability and timing)
SAME = ("status", "prediction", "flagged", "error", "width", "height", "decode", "scope",
        "scope_reason")


@pytest.fixture(scope="module")
def ray_session():
    ray = import_ray()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(data_dir: Path, tmp_path_factory) -> Path:
    """A small archive of real files: 24 JPEGs of children, an adult's JPEG (out of scope by the
    population check), a DICOM, a truncated JPEG and a text file."""
    folder = tmp_path_factory.mktemp("archive")
    for label in ("NORMAL", "PNEUMONIA"):
        (folder / label).mkdir()
        for path in sorted((data_dir / "kermany_test_224" / label).glob("*.jpeg"))[:12]:
            shutil.copy(path, folder / label / path.name)
    dicom = sorted((data_dir / "dicom").glob("*.dcm"))[0]
    shutil.copy(dicom, folder / dicom.name)
    shutil.copy(min((data_dir / "adult_cxr" / "nih").glob("*.jpeg")), folder / ADULT)
    jpeg = next((folder / "NORMAL").glob("*.jpeg")).read_bytes()
    (folder / "broken").mkdir()
    (folder / "broken" / "truncated.jpeg").write_bytes(jpeg[:len(jpeg) // 3])
    (folder / "broken" / "notes.txt").write_text("not an image\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def single(archive: Path, loaded_bundle, tmp_path_factory) -> dict[str, dict]:
    """The single-process runner's rows for the archive, by path."""
    out = tmp_path_factory.mktemp("single")
    triage(archive, loaded_bundle, out, batch=8, workers=2)
    return _rows(out)


def _rows(out: Path) -> dict[str, dict]:
    with open(out / RESULTS, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_path = {row["path"]: row for row in rows}
    assert len(by_path) == len(rows), "a file has two rows"
    return by_path


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _assert_same(rows: dict[str, dict], reference: dict[str, dict]) -> None:
    """Same files, same verdicts, same probabilities: the row's and every label's (p_ columns)."""
    assert sorted(rows) == sorted(reference)
    for path, row in rows.items():
        want = reference[path]
        assert list(row) == list(want), path  # the same columns, p_<label> included
        assert {k: row[k] for k in SAME} == {k: want[k] for k in SAME}, path
        probabilities = ["probability", *(k for k in want if k.startswith("p_"))]
        if want["status"] == "ok":
            assert len(probabilities) == 3, path  # the row's and one per label (two labels)
            for key in probabilities:
                assert abs(float(row[key]) - float(want[key])) <= PROBABILITY_TOLERANCE, \
                    (path, key)
        else:
            assert all(row[k] == "" for k in probabilities) and row["error"]


def test_ray_rows_match_the_single_process_runner(ray_session, archive, single, loaded_bundle,
                                                  tmp_path):
    result = ray_triage(archive, loaded_bundle, tmp_path / "ray", actors=2, batch=8)
    rows = _rows(tmp_path / "ray")
    assert sorted(rows) == _files(archive)  # one row per file, no more
    _assert_same(rows, single)
    statuses = {path: row["status"] for path, row in rows.items()}
    assert statuses["broken/truncated.jpeg"] == statuses["broken/notes.txt"] == "error"
    dicom = next(p for p in rows if p.endswith(".dcm"))
    assert rows[dicom]["status"] == "ok" and rows[dicom]["decode"] == "dicom"
    assert sum(s == "ok" for s in statuses.values()) == 26  # the 25 JPEGs and the DICOM
    # the population check, scored per decode task on Ray, gives the adult the same words
    assert rows[ADULT]["scope"] == "out" and "looks like an adult" in rows[ADULT]["scope_reason"]
    # the run says where it ran; the counts cover the whole results file
    ran = json.loads(result.summary_json.read_text(encoding="utf-8"))
    assert ran["this_run"]["ray"]["actors"] == 2 and ran["this_run"]["processed"] == len(rows)
    assert ran["counts"]["errors"] == 2 and ran["device_check"]["passed"]
    assert "truncated.jpeg" in (tmp_path / "ray" / "decode.log").read_text(encoding="utf-8")


def test_ray_completes_a_cut_short_results_folder(ray_session, archive, single, loaded_bundle,
                                                  tmp_path):
    """A run killed after k rows (its last line cut mid-row) is completed without duplicates;
    a folder started by the single-process runner is finished on Ray the same way."""
    out = tmp_path / "resumed"
    triage(archive, loaded_bundle, out, batch=8, workers=2)
    lines = (out / RESULTS).read_text(encoding="utf-8").splitlines(keepends=True)
    k = 9
    (out / RESULTS).write_text("".join(lines[:1 + k]) + lines[1 + k][:20], encoding="utf-8")
    result = ray_triage(archive, loaded_bundle, out, actors=1, batch=8)
    assert result.skipped == k and result.processed == len(single) - k
    _assert_same(_rows(out), single)
    again = ray_triage(archive, loaded_bundle, out, actors=1)  # nothing left to do
    assert again.processed == 0 and again.skipped == len(single)
    assert len(_rows(out)) == len(single)


def test_cli_ray_joins_a_running_cluster(ray_session, archive, single, cpu_bundle, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    run = run_cli("triage", str(archive), "--bundle", str(cpu_bundle), "--out",
                  str(tmp_path / "cli"), "--ray", address, "--actors", "1", "--quiet",
                  timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "1 engine actor\n" in run.stdout and str(tmp_path / "cli" / RESULTS) in run.stdout
    _assert_same(_rows(tmp_path / "cli"), single)


def test_a_pool_that_leaves_no_cpu_for_decoding_is_refused():
    check_resources(2, 0.5, 2.0)  # this machine's default: 1 CPU for the actors, 1 to decode
    with pytest.raises(RaySetupError, match="no whole CPU for the decode tasks on a Ray cluster "
                                            "of 2 CPUs: use fewer --actors"):
        check_resources(4, 0.5, 2.0)
    with pytest.raises(RaySetupError, match="--actor-cpus must be above 0"):
        check_resources(1, 0.0, None)


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    with pytest.raises(RaySetupError, match=r"pip install 'cxr-deploy-kit\[ray\]'"):
        import_ray()


def test_an_actor_with_another_artifact_stops_the_run_in_plain_words(ray_session, archive,
                                                                    loaded_bundle, tmp_path):
    """The driver checked one artifact; an actor that opens a file with another sha256 (a node
    with another bundle at the same path) refuses to score and the run stops, nothing written."""
    from dataclasses import replace

    from runtime.running.ray_triage import RayRunError

    other = replace(loaded_bundle, artifact=replace(loaded_bundle.artifact, sha256="0" * 64))
    with pytest.raises(RayRunError, match="not the artifact the driver checked"):
        ray_triage(archive, other, tmp_path / "out", actors=1, check_device=False)
    assert _rows(tmp_path / "out") == {}


def test_ray_rows_of_several_findings_match_the_single_process_runner(
        ray_session, archive, findings_bundle, tmp_path):
    """A model with two findings: Ray's rows name the same finding, flag the same rows and give
    every label's probability as the folder runner does; both record every finding's threshold."""
    bundle = load_bundle(findings_bundle)
    triage(archive, bundle, tmp_path / "single", batch=8, workers=2)
    ray_triage(archive, bundle, tmp_path / "ray", actors=1, batch=8)
    single, rows = _rows(tmp_path / "single"), _rows(tmp_path / "ray")
    _assert_same(rows, single)
    named = {row["prediction"] for row in rows.values() if row["flagged"] == "1"}
    assert {"PNEUMONIA", "EFFUSION"} <= named  # each finding flags some of these X-rays
    runs = [json.loads((tmp_path / name / "run.json").read_text()) for name in ("single", "ray")]
    assert runs[0]["thresholds"] == runs[1]["thresholds"] == bundle.thresholds
