"""Results back to the archive: one DICOM Structured Report per triaged DICOM image (highdicom).

:func:`write_reports` reads a triage results folder (``results.csv``, ``run.json``,
``summary.json`` and the reviewer's ``review.csv``), re-reads each scored DICOM file under the
run's input folder (it must still be the file that was scored), and writes one Comprehensive SR
per image into ``out``, mirroring the input's sub-folders (``a/b.dcm`` -> ``out/a/b.dcm.sr.dcm``).
The input folder is never written to. Each SR belongs to the source image's study (same patient
and study attributes, the study's StudyInstanceUID), to a new series (one per study and call), and
lists the source image (study, series, SOP class and instance UIDs) as its evidence and as the
measurement group's source image. A rerun writes new SRs (new UIDs) over the same file names.

Content: TID 1500 "Measurement Report" with one TID 1501 measurement group (highdicom's
``MeasurementsAndQualitativeEvaluations``), observed by the model (a device observer) and, when the
case was reviewed, the reviewer (a person observer). The codes, standard wherever one fits:

- procedure reported: SNOMED CT 399208008 "Plain chest X-ray"; finding type: SNOMED CT 233604007
  "Pneumonia" (the disorder the model screens for);
- finding (CODE, name SNOMED CT 233604007 "Pneumonia"): SNOMED CT 415684004 "Suspected" for a
  flagged in-scope image; SNOMED CT 82334004 "Indeterminate" for an out-of-scope image (the model
  does not apply: a person reads it); for an image the model did not flag, the local code
  ``99CXRKIT NOTSUSPECTED`` "Not suspected", because the standard "Absent" would claim more than a
  triage model that was not reviewed can say;
- probability of pneumonia: DCM 122157 "Probability", threshold in force: DCM 122411 "Threshold
  Value", both as numbers with UCUM "1" (no units);
- scope verdict (CODE, local ``99CXRKIT SCOPE`` "Within the model's intended use"): SNOMED CT
  373066001 "Yes" / 373067005 "No"; its reason as TEXT (local ``SCOPEREASON``);
- the model: TID 4019 algorithm identification (name = the manifest's model name, version = the
  artifact's sha256, parameters = bundle target, artifact, format, precision, engine, threshold);
  the device observer's UID is derived from that sha256, so one artifact always has one UID;
- the source file's sha256 as TEXT (local ``SOURCESHA256``), so the archive can tell which bytes
  were scored;
- every reviewer's decision as TEXT (local ``REVIEW`` "Reviewer decision": confirmed, overruled
  or unsure, with its ObservationDateTime; the first reviewer is the report's person observer, a
  second opinion names its reviewer by a HAS OBS CONTEXT DCM 121008 "Person Observer Name") and
  notes as DCM 121106 "Comment"; absent when the case was not reviewed. TID 1501 allows TEXT
  qualitative evaluations; the local scheme is declared in the CodingSchemeIdentificationSequence.

A model with several findings (e.g. normal / bacterial / viral pneumonia: findings BACTERIAL and
VIRAL), whose run recorded every finding's threshold (run.json ``thresholds``) and whose row has
every label's probability (results.csv's ``p_<label>`` columns), gets one measurement group per
finding, in the model's finding order: the finding's code as the group's finding type (SNOMED CT
53084003 "Bacterial pneumonia", 75570004 "Viral pneumonia", 233604007 "Pneumonia"; any other label
the local code of its name, e.g. ``99CXRKIT EFFUSION`` "Effusion"), its probability and its
threshold, and its own finding (suspected where that finding reached its threshold, indeterminate
out of scope, not suspected otherwise). The group of the finding the row names (the likeliest that
reached its threshold, else the likeliest) also holds the row's prediction as TEXT (local
``PREDICTION`` "Triage prediction"), the scope reason, the source sha256 and the review: a
reviewer's "confirmed" confirms that finding. The algorithm parameters give every finding's
threshold. A model with one finding, or a row written before the ``p_`` columns, gets the single
group above, as before.

The document is marked complete, preliminary (not final) and unverified: a review decision is
recorded, but nobody signed the SR.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from runtime.bundle.files import is_inside
from runtime.bundle.hashing import sha256_file
from runtime.clinic.review import ReviewLog
from runtime.running.results import (
    RESULTS,
    RUN_INFO,
    SUMMARY,
    ResultsError,
    named_finding,
    read_rows,
    row_probabilities,
    run_thresholds,
)

#: the local coding scheme of the codes no standard terminology has (DICOM: private ones start 99)
CODING_SCHEME = "99CXRKIT"
SR_SUFFIX = ".sr.dcm"
MANUFACTURER = "cxr-deploy-kit"
SERIES_DESCRIPTION = "Pneumonia triage (cxr-deploy-kit)"
#: SeriesNumber of the SR series (a high number, out of the way of the modality's series)
SERIES_NUMBER = 9901


class SRUnavailable(ImportError):
    """highdicom, which writes the reports, is not installed."""


@dataclass(frozen=True)
class RunIdentity:
    """What scored the images: the run's input folder and the bundle/artifact identity."""

    folder: Path
    artifact: str
    sha256: str  # of the artifact
    threshold: float
    bundle: str = ""
    target: str = ""
    format: str = ""
    precision: str = ""
    engine: str = ""
    model: str = ""  # the manifest's model name, when the bundle can still be read
    #: every finding's threshold in force, in the model's finding order (run.json ``thresholds``:
    #: recorded for a model with several findings; empty for one, ``threshold`` being it)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def several(self) -> bool:
        """Whether the run's model has several findings."""
        return len(self.thresholds) > 1

    def parameters(self) -> list[str]:
        """The algorithm parameters written into each report."""
        thresholds = [f"threshold {label}: {value!r}" for label, value in
                      self.thresholds.items()] if self.several else \
            [f"threshold: {self.threshold!r}"]
        return [f"bundle target: {self.target or 'unknown'}", f"artifact: {self.artifact}",
                f"format: {self.format or 'unknown'} {self.precision}".rstrip(),
                f"engine: {self.engine or 'unknown'}", *thresholds]


@dataclass
class SROutcome:
    """What one call wrote and why the other rows got no report."""

    out: Path
    written: list[Path] = field(default_factory=list)
    not_dicom: int = 0  # scored rows of other formats (JPEG, PNG, ...)
    error_rows: int = 0  # rows triage could not score
    problems: list[tuple[str, str]] = field(default_factory=list)  # (row path, why no report)


def _highdicom():
    try:
        import highdicom
    except ImportError as exc:
        raise SRUnavailable("writing DICOM SR needs highdicom, which is not installed: pip "
                            "install 'cxr-deploy-kit[dicom]'") from exc
    return highdicom


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path} is unreadable ({exc}); rerun the triage into a new --out "
                           "folder") from exc


def _model_name(bundle: str, sha256: str) -> str:
    """The manifest's model name when the bundle is still there and holds this artifact."""
    if not bundle:
        return ""
    from runtime.bundle.artifacts import read_manifest
    from runtime.errors import BundleError

    try:
        manifest = read_manifest(bundle)
    except (BundleError, OSError):
        return ""
    return manifest.model.name if any(a.sha256 == sha256 for a in manifest.artifacts) else ""


def read_run(results_dir: str | os.PathLike) -> RunIdentity:
    """The run behind a results folder (run.json, summary.json); ResultsError when it is not one."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsError(f"results folder not found: {results_dir}")
    if not (results_dir / RESULTS).is_file():
        raise ResultsError(f"{results_dir} holds no {RESULTS}: it is not a triage results folder "
                           "(run `python -m runtime triage FOLDER --out DIR` first)")
    run = _read_json(results_dir / RUN_INFO)
    if not run.get("folder") or not run.get("sha256") or run.get("threshold") is None:
        raise ResultsError(f"{results_dir / RUN_INFO} is missing or incomplete: cannot tell which "
                           "folder and model produced these results; rerun the triage")
    bundle = _read_json(results_dir / SUMMARY).get("bundle", {})
    if bundle.get("sha256") not in (None, run["sha256"]):
        bundle = {}  # a summary of another artifact is not this run's identity
    return RunIdentity(folder=Path(run["folder"]), artifact=str(run.get("artifact", "")),
                       sha256=run["sha256"], threshold=float(run["threshold"]),
                       bundle=str(bundle.get("bundle", "")), target=str(bundle.get("target", "")),
                       format=str(bundle.get("format", "")),
                       precision=str(bundle.get("precision", "")),
                       engine=str(bundle.get("engine", "")),
                       model=_model_name(str(bundle.get("bundle", "")), run["sha256"]),
                       thresholds=run_thresholds(run))


def check_sr_out(results_dir: Path, out: Path, folder: Path) -> None:
    """Refuse an output folder inside the run's input folder, or the results folder itself."""
    if is_inside(out, folder):
        raise ResultsError(f"--out {out} is inside the triage input folder {folder}; the input "
                           "folder is never written to: choose an output folder elsewhere")
    if Path(out).resolve() == Path(results_dir).resolve():
        raise ResultsError(f"--out {out} is the results folder itself: choose another folder "
                           f"(e.g. {Path(results_dir) / 'sr'})")
    if Path(out).exists() and not Path(out).is_dir():
        raise ResultsError(f"--out {out} is a file, not a folder: choose a folder")


def sr_path(out: Path, relative: str) -> Path:
    """Where the report of the row ``relative`` (a results.csv path) is written."""
    return out / (relative + SR_SUFFIX)


def _latest_sha256(log: ReviewLog) -> dict[str, str]:
    """The image sha256 each reviewed path had when the reviewer last saw it."""
    seen: dict[str, str] = {}
    for entry in log.entries:
        if entry.image_sha256:
            seen[entry.path] = entry.image_sha256
    return seen


def _source(path: Path, row: dict[str, str], reviewed_sha: str):
    """(dataset without pixels, sha256) of a scored file; ValueError says why it cannot be used."""
    from runtime.errors import DecodeError
    from runtime.imaging.dicom import read_dataset

    if not path.is_file():  # never open a pipe or a device: only a regular file
        raise ValueError("the source file is no longer in the input folder")
    digest = sha256_file(path)
    if reviewed_sha and digest != reviewed_sha:
        raise ValueError("the source file changed since the reviewer saw it (sha256 differs); "
                         "triage and review it again")
    try:
        ds = read_dataset(path, force=True, stop_before_pixels=True)
    except DecodeError as exc:
        raise ValueError(f"the source file no longer reads as DICOM ({exc})") from exc
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                           "SOPClassUID") if not ds.get(k)]
    if missing:
        raise ValueError(f"the source file has no {', '.join(missing)}: an SR cannot reference it")
    size = (str(ds.get("Columns", "")), str(ds.get("Rows", "")))
    if row.get("width") and size != (row.get("width"), row.get("height")):
        raise ValueError(f"the source file is {size[0]}x{size[1]} now, {row.get('width')}x"
                         f"{row.get('height')} when it was scored: triage it again")
    return ds, digest


def _dicom_datetime(iso: str) -> str:
    """An ISO 8601 time (review.csv) as a DICOM DT, '' when it does not parse."""
    try:
        return dt.datetime.fromisoformat(iso).strftime("%Y%m%d%H%M%S%z")
    except (TypeError, ValueError):
        return ""


def _person_name(text: str) -> str:
    """A reviewer's name as typed, fit for a PN value: no backslash, at most 64 characters, and
    a trailing ``^`` when it has no components (DICOM: one component, the name as a whole)."""
    name = " ".join(text.replace("\\", " ").split())[:63]
    return name if not name or "^" in name else name + "^"


class _Codes:
    """The coded concepts of a report (see the module docstring for why these)."""

    def __init__(self, hd):
        C = hd.sr.CodedConcept
        self.chest_xray = C("399208008", "SCT", "Plain chest X-ray")
        self.pneumonia = C("233604007", "SCT", "Pneumonia")
        self.suspected = C("415684004", "SCT", "Suspected")
        self.indeterminate = C("82334004", "SCT", "Indeterminate")
        self.not_suspected = C("NOTSUSPECTED", CODING_SCHEME, "Not suspected")
        self.probability = C("122157", "DCM", "Probability")
        self.threshold = C("122411", "DCM", "Threshold Value")
        self.no_units = C("1", "UCUM", "no units")
        self.scope = C("SCOPE", CODING_SCHEME, "Within the model's intended use")
        self.scope_reason = C("SCOPEREASON", CODING_SCHEME, "Scope reason")
        self.yes = C("373066001", "SCT", "Yes")
        self.no = C("373067005", "SCT", "No")
        self.source_sha256 = C("SOURCESHA256", CODING_SCHEME, "Source image SHA-256")
        self.review = C("REVIEW", CODING_SCHEME, "Reviewer decision")
        self.comment = C("121106", "DCM", "Comment")
        self.person = C("121006", "DCM", "Person")
        self.person_name = C("121008", "DCM", "Person Observer Name")
        self.device = C("121007", "DCM", "Device")
        self.prediction = C("PREDICTION", CODING_SCHEME, "Triage prediction")
        self._hd = hd

    def finding(self, row: dict[str, str]):
        if row.get("scope") == "out":
            return self.indeterminate
        return self.suspected if row.get("flagged") == "1" else self.not_suspected

    def of_label(self, label: str):
        """The coded concept of a model's finding: SNOMED CT where the label is one of
        :data:`FINDING_CODES`, else the local code of its name."""
        known = FINDING_CODES.get(label.upper())
        if known:
            return self._hd.sr.CodedConcept(*known)
        value = re.sub(r"[^A-Z0-9]", "", label.upper())[:16] or "FINDING"
        return self._hd.sr.CodedConcept(value, CODING_SCHEME, label)


#: the standard codes of the findings a chest X-ray model is commonly trained for (label -> code)
FINDING_CODES = {"PNEUMONIA": ("233604007", "SCT", "Pneumonia"),
                 "BACTERIAL": ("53084003", "SCT", "Bacterial pneumonia"),
                 "VIRAL": ("75570004", "SCT", "Viral pneumonia")}


@dataclass(frozen=True)
class FindingResult:
    """One finding of a scored row: its probability, its threshold and whether it reached it."""

    label: str
    probability: float
    threshold: float
    reached: bool


def finding_results(row: dict[str, str], run: RunIdentity) -> list[FindingResult]:
    """Every finding of ``row`` in the model's finding order; empty for a model with one finding
    and for a row written before the ``p_<label>`` columns (its report: the single-finding one)."""
    if not run.several:
        return []
    p = row_probabilities(row)
    if any(label not in p for label in run.thresholds):
        return []
    flagged_in = row.get("flagged") == "1" and row.get("scope") != "out"
    return [FindingResult(label, p[label], t,
                          p[label] >= t or (flagged_in and row.get("prediction") == label))
            for label, t in run.thresholds.items()]


#: patient and study attributes highdicom copies from the source (type 2: present, maybe empty)
_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
          "StudyID", "StudyDate", "StudyTime")


def _with_type2(source):
    """The source header with its missing type 2 patient/study attributes present and empty."""
    missing = [name for name in _TYPE2 if name not in source]
    if not missing:
        return source
    evidence = copy.deepcopy(source)
    for name in missing:
        setattr(evidence, name, None)
    return evidence


def build_report(source, row: dict[str, str], run: RunIdentity, digest: str, case,
                 series_uid: str, instance_number: int, previous_versions: list | None = None):
    """The SR dataset of one scored image (``case``: its runtime.clinic.review.CaseReview, or None;
    ``previous_versions``: the SRs it amends, listed as its predecessor documents)."""
    hd = _highdicom()
    from pydicom.uid import generate_uid

    codes = _Codes(hd)
    sr = hd.sr
    algorithm = sr.AlgorithmIdentification(name=run.model or "pneumonia classifier",
                                           version=run.sha256, parameters=run.parameters(),
                                           manufacturer=MANUFACTURER)
    device = sr.ObserverContext(codes.device, sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[run.sha256]), name=run.model or None,
        manufacturer_name=MANUFACTURER, model_name=run.artifact or None))
    reviewed = case is not None and bool(case.decision)
    person = sr.ObserverContext(codes.person, sr.PersonObserverIdentifyingAttributes(
        name=_person_name(case.reviewer or "unknown reviewer"))) if reviewed else None

    def measured(concept, identifier: str, probability: float, threshold: float, finding):
        scope = sr.QualitativeEvaluation(codes.scope,
                                         codes.yes if row.get("scope") == "in" else codes.no)
        return sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=sr.TrackingIdentifier(uid=generate_uid(), identifier=identifier),
            finding_type=concept, algorithm_id=algorithm,
            measurements=[sr.Measurement(codes.probability, probability, codes.no_units),
                          sr.Measurement(codes.threshold, threshold, codes.no_units)],
            qualitative_evaluations=[sr.QualitativeEvaluation(concept, finding), scope],
            source_images=[sr.SourceImageForMeasurementGroup(source.SOPClassUID,
                                                             source.SOPInstanceUID)])

    findings = finding_results(row, run)
    if findings:  # several findings: one group each; the named one holds the texts below
        groups = [measured(codes.of_label(f.label), f"triage: {f.label}", f.probability,
                           f.threshold, codes.indeterminate if row.get("scope") == "out" else
                           codes.suspected if f.reached else codes.not_suspected)
                  for f in findings]
    else:
        groups = [measured(codes.pneumonia, "pneumonia triage", float(row["probability"]),
                           run.threshold, codes.finding(row))]
    group = groups[list(run.thresholds).index(named_finding(row, run.thresholds))] \
        if findings else groups[0]
    texts = [sr.TextContentItem(codes.prediction, row.get("prediction") or "-", "CONTAINS")] \
        if findings else []
    texts += [sr.TextContentItem(codes.scope_reason, row.get("scope_reason") or "-", "CONTAINS"),
              sr.TextContentItem(codes.source_sha256, digest, "CONTAINS")]
    for n, opinion in enumerate(case.opinions if reviewed else []):
        decision = sr.TextContentItem(codes.review, opinion.decision, "CONTAINS")
        when = _dicom_datetime(opinion.time)
        if when:
            decision.ObservationDateTime = when
        if n:  # a second opinion names its reviewer (the first is the report's person observer)
            decision.ContentSequence = sr.ContentSequence([sr.PnameContentItem(
                codes.person_name, _person_name(opinion.reviewer or "unknown reviewer"),
                "HAS OBS CONTEXT")])
        texts.append(decision)
    for note in (case.notes if case is not None else []):
        if note.strip():
            texts.append(sr.TextContentItem(codes.comment, note, "CONTAINS"))
    group[0].ContentSequence.extend(texts)
    report = sr.MeasurementReport(
        observation_context=sr.ObservationContext(observer_person_context=person,
                                                  observer_device_context=device),
        procedure_reported=codes.chest_xray, imaging_measurements=groups)
    with warnings.catch_warnings():  # the source's own patient name is not ours to correct
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        return sr.ComprehensiveSR(
            evidence=[_with_type2(source)], content=report[0], series_instance_uid=series_uid,
            series_number=SERIES_NUMBER, sop_instance_uid=generate_uid(),
            instance_number=instance_number, manufacturer=MANUFACTURER, is_complete=True,
            previous_versions=previous_versions or None,
            is_final=False, is_verified=False, series_description=SERIES_DESCRIPTION,
            specific_character_set="ISO_IR 192",  # UTF-8: any source name, the reasons' dashes
            coding_schemes=[hd.coding_schemes.CodingSchemeIdentificationItem(
                designator=CODING_SCHEME, name="cxr-deploy-kit local codes",
                responsible_organization=MANUFACTURER)])


def _save(dataset, path: Path) -> None:
    """Write a dataset atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    dataset.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)


def make_reports(results_dir: str | os.PathLike, out: str | os.PathLike) -> SROutcome:
    """Write the SRs of a results folder into ``out`` and say what was skipped and why.

    Raises ResultsError for a folder that cannot be used (not a results folder, input folder
    gone, ``out`` inside the input folder) and SRUnavailable without highdicom; a single file
    that cannot be reported (gone, changed, no UIDs) is listed in ``problems``, never fatal.
    """
    results_dir, out = Path(results_dir), Path(out)
    run = read_run(results_dir)
    check_sr_out(results_dir, out, run.folder)
    if not run.folder.is_dir():
        raise ResultsError(f"the triage input folder {run.folder} (from {results_dir / RUN_INFO}) "
                           "is not there: the reports reference its files; make it available "
                           "at that path again")
    _highdicom()
    from pydicom.uid import generate_uid

    log = ReviewLog(results_dir)
    cases, reviewed_sha = log.cases(), _latest_sha256(log)
    outcome = SROutcome(out)
    series: dict[str, list] = {}  # study UID -> [series UID, instances written]
    for row in read_rows(results_dir / RESULTS):
        if row.get("status") != "ok":
            outcome.error_rows += 1
            continue
        if row.get("decode", "").split("/")[0] != "dicom":
            outcome.not_dicom += 1
            continue
        relative = row["path"]
        try:
            source, digest = _source(run.folder / relative, row, reviewed_sha.get(relative, ""))
        except ValueError as exc:
            outcome.problems.append((relative, str(exc)))
            continue
        except OSError as exc:
            outcome.problems.append((relative, "the source file cannot be read "
                                               f"({(exc.strerror or str(exc)).lower()})"))
            continue
        target = sr_path(out, relative)
        if not is_inside(target, out):
            outcome.problems.append((relative, "its report would land outside --out"))
            continue
        study = series.setdefault(str(source.StudyInstanceUID), [generate_uid(), 0])
        study[1] += 1
        report = build_report(source, row, run, digest, cases.get(relative), study[0], study[1])
        try:
            _save(report, target)
        except OSError as exc:
            raise ResultsError(f"cannot write {target} ({exc.strerror or exc}); choose an --out "
                               "folder you can write to") from exc
        outcome.written.append(target)
    return outcome


def write_reports(results_dir: Path, out: Path) -> list[Path]:
    """One DICOM SR per scored DICOM image of ``results_dir``, written under ``out``.

    Returns the SR files written. Raises ResultsError (plain words) for a results folder that
    cannot be used or an ``out`` inside the input folder, SRUnavailable without highdicom. Use
    :func:`make_reports` for the counts of rows skipped and files that could not be reported.
    """
    return make_reports(results_dir, out).written
