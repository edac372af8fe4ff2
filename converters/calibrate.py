"""Calibration per site: a bundle's operating point measured on the site's own labelled X-rays.

The labelled images (a folder with one subfolder per class, e.g. ``NORMAL/`` and ``PNEUMONIA/``,
or a CSV with ``path`` and ``label`` columns; for a multi-label model a CSV ``label`` may join
several of its labels with ``|``, or be empty for none, as its ``[data]`` CSV does:
:func:`converters.config.data.split_labels`) are triaged with the real runner
(:func:`runtime.running.triage.triage`: same decode, scope rules and error rows as in production) into a
work folder, and its ``results.csv`` is joined with the labels. How each row counts:

- error rows (the file could not be read or decoded) are counted per class and left out;
- out-of-scope rows are counted per class; they are always flagged (sent to a person), so they
  count as flagged in the "as deployed" figures and are left out of the threshold search;
- the threshold search and the 95% Wilson intervals use the in-scope scored rows.

The site threshold is the highest threshold at which at least the target share of the site's
in-scope positive images is flagged (:func:`evaluation.metrics.threshold_for_sensitivity`). The
result is written by :mod:`converters.site_bundle` into a copy of the bundle; the original is
never modified.

A model with several findings (e.g. normal / bacterial / viral: findings BACTERIAL and VIRAL) gets
a site threshold per finding, each one against the rest: the images labelled with that finding
are its positives, every other labelled image its negatives, scored by that finding's probability
(results.csv's ``p_<label>`` column); the target sensitivity is the finding's own at build
(``finding_threshold_info``) unless ``--sensitivity`` is given. ``threshold``, the AUC and the
operating points of the calibration are the first finding's, ``finding_thresholds`` and
``findings`` hold every finding's. A model with one finding gets what it always got.

A multi-label model's images may carry several labels or none: a finding's positives are the
images that carry it, its negatives every image that does not (so one image can be a positive
of two findings); ``counts`` are images per label and ``images`` every image once; at least
:data:`MIN_PER_CLASS` scored in-scope images must carry each finding and as many must not.
A multiclass model takes one label per image: a ``|`` row is refused naming its line.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from converters.config.data import MULTILABEL_SEPARATOR, split_labels
from evaluation.metrics import (
    auc_interval,
    binary_metrics,
    roc_auc,
    threshold_for_sensitivity,
    wilson_interval,
)
from runtime.bundle.files import is_inside
from runtime.bundle.hashing import sha256_file
from runtime.bundle.load import Bundle
from runtime.contract.manifest import (
    MANIFEST,
    SiteCalibration,
    SiteClassCounts,
    SiteFinding,
    SiteOperatingPoint,
    SiteSource,
)
from runtime.running.results import RESULTS, read_rows, row_probabilities
from runtime.running.triage import triage, walk

#: fewer scored in-scope images than this in either class and no calibration is written: with
#: 50 positives a 95% Wilson interval around a sensitivity of 0.95 is already 0.84–0.98
MIN_PER_CLASS = 50
RULE = ("the highest threshold at which at least the target share of the site's in-scope "
        "{positive} images is flagged (probability >= threshold)")
#: results.csv writes probabilities with 6 decimals (runtime.running.results.Row)
CSV_PROBABILITY_STEP = 1e-6
IMAGES, RESULTS_DIR, JOINED = "images", "results", "labelled_results.csv"
#: the console table's column of every labelled image (a multi-label model)
ALL_IMAGES = "all images"


class CalibrationError(ValueError):
    """Labelled images or options that cannot make a calibration; the message names the fix."""


@dataclass(frozen=True)
class Labelled:
    """The site's labelled images, staged under ``work/images/`` for the runner (one label per
    image: ``<class>/...``; a multi-label model's CSV: one folder, labels kept in ``labels``)."""

    source: str  # the folder or CSV, as given
    listed: dict[str, int]  # class -> files found (multi-label: files that carry it)
    origin: dict[str, str]  # staged relative path (as in results.csv) -> the original file
    labels: dict[str, tuple[str, ...]]  # staged relative path -> the labels its image carries
    multilabel: bool = False

    @property
    def total(self) -> int:
        """Every labelled file, counted once."""
        return len(self.origin)


# --------------------------------------------------------------------------------------------
# the labelled images


def _class_folders(folder: Path, classes: list[str]) -> dict[str, Path]:
    by_name = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    missing = [c for c in classes if c.lower() not in by_name]
    if missing:
        raise CalibrationError(
            f"{folder} has no {'/'.join(missing)} subfolder: give a folder with one subfolder "
            f"per class ({', '.join(c + '/' for c in classes)}), or a CSV file with path and "
            "label columns")
    return {c: by_name[c.lower()] for c in classes}


def _row_labels(label: str, names: dict[str, str], multilabel: bool) -> tuple[str, ...] | str:
    """The labels one CSV cell gives (in the model's spelling), or what is wrong with it."""
    classes = ", ".join(names.values())
    if not multilabel:
        if MULTILABEL_SEPARATOR in label:
            return (f"label {label!r} names several labels, but this model is multiclass (one "
                    f"label per image, one of {classes}): list the image under one of them")
        given = [label]
    else:
        given = split_labels(label)
    unknown = [v for v in given if v.lower() not in names]
    if unknown:
        return (f"label {unknown[0]!r} is not one of {classes}" +
                (f" (several joined by '{MULTILABEL_SEPARATOR}', or empty for none)"
                 if multilabel else ""))
    return tuple(dict.fromkeys(names[v.lower()] for v in given))


def _read_csv(path: Path, classes: list[str], multilabel: bool = False
              ) -> list[tuple[Path, tuple[str, ...]]]:
    """(file, its labels) per row of a CSV with ``path`` and ``label`` columns (one label per
    row; a multi-label model's rows may join several with ``|`` or leave it empty)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{path} cannot be read ({exc}); give a UTF-8 CSV file with "
                               "path and label columns") from None
    reader = csv.DictReader(text.splitlines())
    columns = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
    if "path" not in columns or "label" not in columns:
        raise CalibrationError(f"{path} has columns {reader.fieldnames or []}; it needs a header "
                               "row with path and label columns (path relative to the CSV's "
                               "folder or absolute, label one of " + ", ".join(classes) + ")")
    names = {c.lower(): c for c in classes}
    rows, seen, problems = [], set(), []
    for line, row in enumerate(reader, start=2):
        raw, label = (row.get(columns["path"]) or "").strip(), \
            (row.get(columns["label"]) or "").strip()
        if not raw and not label:
            continue
        file = path.parent / raw
        labels = _row_labels(label, names, multilabel)
        if isinstance(labels, str):
            problems.append(f"line {line}: {labels}")
        elif not raw or not file.is_file():
            problems.append(f"line {line}: file not found: {file}")
        elif file.resolve() in seen:
            problems.append(f"line {line}: {raw} is listed twice")
        else:
            seen.add(file.resolve())
            rows.append((file, labels))
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CalibrationError(f"{path}: " + "; ".join(problems[:5]) + more +
                               ": fix these rows and rerun")
    return rows


def stage_labelled(labelled: Path, classes: list[str], images: Path,
                   multilabel: bool = False) -> Labelled:
    """Stage the labelled images as links for the runner (nothing copied): ``images/<class>/``
    for one label per image; a multi-label model's CSV in one folder, ``images/<n>-<file>``."""
    check_labelled(labelled, classes)
    images.mkdir(parents=True)
    origin: dict[str, str] = {}
    carried: dict[str, tuple[str, ...]] = {}
    listed: dict[str, int] = {c: 0 for c in classes}
    if labelled.is_dir():
        for name, folder in _class_folders(labelled, classes).items():
            os.symlink(folder.resolve(), images / name, target_is_directory=True)
            for entry in walk(images / name):
                staged = f"{name}/{entry.relative}"
                origin[staged] = str(folder / entry.relative)
                carried[staged] = (name,)
                listed[name] += 1
    elif labelled.is_file() and labelled.suffix.lower() == ".csv":
        flat = multilabel
        for name in [] if flat else classes:
            (images / name).mkdir()
        for index, (file, labels) in enumerate(_read_csv(labelled, classes, multilabel)):
            staged = f"{index:06d}-{file.name}" if flat else f"{labels[0]}/{index:06d}-{file.name}"
            os.symlink(file.resolve(), images / staged)
            origin[staged] = str(file)
            carried[staged] = labels
            for name in labels:
                listed[name] += 1
    return Labelled(str(labelled), listed, origin, carried, multilabel)


def check_labelled(labelled: Path, classes: list[str]) -> None:
    """A folder with one subfolder per class, or a .csv file."""
    if labelled.is_dir():
        _class_folders(labelled, classes)
    elif not (labelled.is_file() and labelled.suffix.lower() == ".csv"):
        raise CalibrationError(f"--labelled {labelled}: not found, or neither a folder nor a "
                               f".csv file; give a folder with {'/'.join(classes)} subfolders "
                               "or a CSV file with path and label columns")


def needed(listed: dict[str, int], total: int, findings: list[str], multilabel: bool
           ) -> dict[str, int]:
    """The groups a calibration needs :data:`MIN_PER_CLASS` of, with their counts: each class
    (one label per image), or for a multi-label model the images with and without each
    finding."""
    if not multilabel:
        return dict(listed)
    out = {}
    for finding in findings:
        out[finding] = listed[finding]
        out[f"without {finding}"] = total - listed[finding]
    return out


def refuse_too_few(counts: dict[str, int], what: str, detail: str = "") -> None:
    short = {c: n for c, n in counts.items() if n < MIN_PER_CLASS}
    if short:
        have = ", ".join(f"{n} {c}" for c, n in short.items())
        raise CalibrationError(
            f"too few labelled images to calibrate: {have} {what}{detail}; a calibration needs "
            f"at least {MIN_PER_CLASS} scored, in-scope images of each class (a multi-label "
            "model: with and without each finding): add such images and rerun")


# --------------------------------------------------------------------------------------------
# the numbers


def operating_point(positive: np.ndarray, probability: np.ndarray, inside: np.ndarray,
                    threshold: float) -> SiteOperatingPoint:
    """Sensitivity/specificity at ``threshold`` on in-scope rows (Wilson 95%), and as deployed:
    every scored row, an out-of-scope one counted as flagged (it always goes to a person)."""
    m = binary_metrics(positive[inside], probability[inside], threshold)
    sens_low, sens_high = wilson_interval(m.tp, m.tp + m.fn)
    spec_low, spec_high = wilson_interval(m.tn, m.tn + m.fp)
    deployed = binary_metrics(positive, np.where(inside, probability, np.inf), threshold)
    return SiteOperatingPoint(
        threshold=float(threshold), sensitivity=m.sensitivity, sensitivity_low=sens_low,
        sensitivity_high=sens_high, specificity=m.specificity, specificity_low=spec_low,
        specificity_high=spec_high, tp=m.tp, fn=m.fn, tn=m.tn, fp=m.fp,
        deployed_sensitivity=deployed.sensitivity, deployed_specificity=deployed.specificity)


def _joined(rows: list[dict[str, str]], labelled: Labelled) -> list[dict]:
    """The runner's rows of the labelled images, each with its ``labels`` (a tuple), ``label``
    (them joined by ``|``, as in the CSV) and ``source`` (the original file)."""
    out = []
    for row in rows:
        labels = labelled.labels.get(row["path"])
        if labels is not None:
            out.append({**row, "labels": labels, "label": MULTILABEL_SEPARATOR.join(labels),
                        "source": labelled.origin[row["path"]]})
    return out


def _counts(rows: list[dict], listed: int) -> SiteClassCounts:
    scored = [r for r in rows if r["status"] == "ok"]
    out = sum(r["scope"] != "in" for r in scored)
    return SiteClassCounts(listed=listed, errors=listed - len(scored), out_of_scope=out,
                           in_scope=len(scored) - out)


def class_counts(rows: list[dict], labelled: Labelled) -> dict[str, SiteClassCounts]:
    """Per class, what became of the images that carry it."""
    return {name: _counts([r for r in rows if name in r["labels"]], listed)
            for name, listed in labelled.listed.items()}


def calibrate(bundle: Bundle, labelled: Path, site: str, work: Path, sensitivity: float | None,
              *, workers: int = 2, command: str = "",
              progress: Callable[[int, int], None] | None = None,
              on_total: Callable[[int], None] | None = None) -> SiteCalibration:
    """Triage the labelled images with ``bundle`` into ``work`` and measure the site's
    operating point; writes ``work/labelled_results.csv`` (one row per image, with its label)."""
    manifest = bundle.manifest
    target = manifest.threshold_info.sensitivity if sensitivity is None else sensitivity
    if not 0.0 < target <= 1.0:
        raise CalibrationError(f"--sensitivity {target} is not a share in (0, 1]; e.g. 0.95")
    multilabel = manifest.model.task == "multilabel"
    findings_of_model = manifest.model.finding_labels
    staged = stage_labelled(labelled, manifest.model.classes, work / IMAGES, multilabel)
    refuse_too_few(needed(staged.listed, staged.total, findings_of_model, multilabel),
                   f"in {labelled}")
    triage(work / IMAGES, bundle, work / RESULTS_DIR, workers=workers, progress=progress,
           on_total=on_total)
    rows = _joined(read_rows(work / RESULTS_DIR / RESULTS), staged)
    counts = class_counts(rows, staged)
    images = _counts(rows, staged.total) if multilabel else None
    refuse_too_few(needed({c: n.in_scope for c, n in counts.items()},
                          images.in_scope if images else 0, findings_of_model, multilabel),
                   "scored in scope",
                   " (" + "; ".join(f"{c}: {n.listed} listed, {n.errors} could not be read, "
                                    f"{n.out_of_scope} out of scope" for c, n in counts.items())
                   + f"; per-image results in {work / RESULTS_DIR / RESULTS})")
    scored = [r for r in rows if r["status"] == "ok"]
    positive_class = manifest.model.positive_class
    positive = np.array([positive_class in r["labels"] for r in scored])
    probability = np.array([float(r["probability"]) for r in scored])
    inside = np.array([r["scope"] == "in" for r in scored])
    build = manifest.thresholds()
    findings = {} if len(build) == 1 else {
        label: finding_figures(label, scored, inside, build[label],
                               _target(manifest, label, sensitivity))
        for label in build}
    if findings:  # the first finding's figures are the calibration's own
        probability = _probabilities(scored, positive_class)
    site_threshold = site_threshold_for(positive, probability, inside, target)
    auc_low, auc_high = auc_interval(positive[inside], probability[inside])
    source = bundle.path
    calibration = SiteCalibration(
        site=site, created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        source=SiteSource(bundle=str(source), target=manifest.target,
                          built_at=manifest.provenance.built_at,
                          manifest_sha256=sha256_file(source / MANIFEST),
                          artifact=bundle.artifact.path, artifact_sha256=bundle.artifact.sha256),
        labelled=staged.source, positive_class=positive_class, target_sensitivity=target,
        rule=RULE.format(positive=positive_class), threshold=site_threshold, counts=counts,
        at_build_threshold=operating_point(positive, probability, inside, manifest.threshold),
        at_site_threshold=operating_point(positive, probability, inside, site_threshold),
        auc=roc_auc(positive[inside], probability[inside]), auc_low=auc_low, auc_high=auc_high,
        command=command,
        finding_thresholds={label: f.at_site_threshold.threshold for label, f in findings.items()},
        findings=findings, images=images)
    write_joined(work / JOINED, rows, build, calibration.thresholds() if findings
                 else {positive_class: site_threshold})
    return calibration


def site_threshold_for(positive: np.ndarray, probability: np.ndarray, inside: np.ndarray,
                       target: float) -> float:
    """The site threshold on the in-scope rows (see the module docstring)."""
    # results.csv keeps 6 decimals: half a step lower, every image counted as flagged here has a
    # full-precision probability >= the threshold, so the runtime flags it too
    return max(0.0, threshold_for_sensitivity(positive[inside], probability[inside], target)
               - CSV_PROBABILITY_STEP / 2)


def _target(manifest, label: str, sensitivity: float | None) -> float:
    """A finding's target sensitivity: ``--sensitivity``, else the one its build threshold met."""
    if sensitivity is not None:
        return sensitivity
    return manifest.finding_threshold_info.get(label, manifest.threshold_info).sensitivity


def _probabilities(scored: list[dict], label: str) -> np.ndarray:
    """Each scored row's probability of ``label`` (its ``p_<label>`` column)."""
    values = [row_probabilities(r).get(label) for r in scored]
    if any(v is None for v in values):
        raise CalibrationError(f"the results of the labelled images have no p_{label} column: "
                               "the runtime that triaged them is older than the bundle; "
                               "update the kit and rerun")
    return np.array(values, dtype=np.float64)


def finding_figures(label: str, scored: list[dict], inside: np.ndarray, build: float,
                    target: float) -> SiteFinding:
    """One finding against the rest: its site threshold, AUC and operating points."""
    positive = np.array([label in r["labels"] for r in scored])
    probability = _probabilities(scored, label)
    site = site_threshold_for(positive, probability, inside, target)
    low, high = auc_interval(positive[inside], probability[inside])
    return SiteFinding(target_sensitivity=target,
                       auc=roc_auc(positive[inside], probability[inside]), auc_low=low,
                       auc_high=high,
                       at_build_threshold=operating_point(positive, probability, inside, build),
                       at_site_threshold=operating_point(positive, probability, inside, site))


def write_joined(path: Path, rows: list[dict], build: dict[str, float],
                 site: dict[str, float]) -> None:
    """One row per labelled image: its label, what the runner said, flagged at both thresholds
    (every finding's, ``{finding: threshold}``); a model with several findings also gets its
    prediction and every label's probability (``p_<label>``)."""
    several = len(build) > 1
    labels = list(row_probabilities(next((r for r in rows if r["status"] == "ok"), {})))
    with open(path, "w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(["file", "label", "status", "probability", "scope", "flagged_at_build",
                      "flagged_at_site", "reason",
                      *(["prediction", *(f"p_{label}" for label in labels)] if several else [])])
        for r in rows:
            out.writerow([r["source"], r["label"], r["status"], r["probability"], r["scope"],
                          _flagged_at(r, build), _flagged_at(r, site),
                          r["error"] or r["scope_reason"],
                          *([r["prediction"], *(r.get(f"p_{label}", "") for label in labels)]
                            if several else [])])


def _flagged_at(row: dict[str, str], thresholds: dict[str, float]) -> str:
    """"1"/"0" as runtime.judging.verdict would flag a scored row at ``thresholds`` (any finding
    at its threshold, or out of scope); "" for an error row."""
    if row["status"] != "ok":
        return ""
    if row["scope"] != "in":
        return "1"
    if len(thresholds) == 1:
        (threshold,) = thresholds.values()
        return str(int(float(row["probability"]) >= threshold))
    p = row_probabilities(row)
    return str(int(any(p[label] >= t for label, t in thresholds.items())))


# --------------------------------------------------------------------------------------------
# folders and words


def slug(text: str) -> str:
    """A folder-name-safe form of a site name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "site"


def check_site_name(site: str) -> str:
    site = " ".join(site.split())
    if not site or len(site) > 80 or not site.isprintable():
        raise CalibrationError(f"--site {site!r}: give the site's name in plain words, 1 to 80 "
                               "characters, e.g. --site \"St Mary's paediatrics\"")
    return site


def check_folders(bundle: Path, labelled: Path, work: Path, out: Path) -> None:
    """The original bundle and the labelled images are only read: refuse outputs inside them."""
    if is_inside(out, bundle) or is_inside(bundle, out):
        raise CalibrationError(f"--out {out} is the bundle {bundle} or overlaps it; the original "
                               "bundle is never modified: choose another --out folder")
    for name, folder in (("--work", work), ("--out", out)):
        if labelled.is_dir() and is_inside(folder, labelled):
            raise CalibrationError(f"{name} {folder} is inside the labelled images "
                                   f"({labelled}), which are only read: choose a folder "
                                   "elsewhere")
    if is_inside(work, bundle) or is_inside(work, out):
        raise CalibrationError(f"--work {work} is inside a bundle folder: choose a folder "
                               "elsewhere")
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise CalibrationError(f"--work {work} exists and is not empty: choose a new folder "
                               "(the per-image results of each calibration are kept apart)")


def _interval(value: float, low: float, high: float) -> str:
    return f"{value:.3f} ({low:.3f}–{high:.3f})"


def format_calibration(site: SiteCalibration) -> str:
    """The calibration as a console report (a model with several findings: one block per
    finding, each against the rest)."""
    names = list(site.counts)
    columns = {**site.counts, **({ALL_IMAGES: site.images} if site.images else {})}
    width = max(11, *(len(n) + 2 for n in columns))
    lines = [f"Site calibration \"{site.site}\" ({site.created_at}) of {site.source.bundle} "
             f"({site.source.artifact}) on {site.labelled}",
             "", f"{'':30s}" + "".join(f"{n:>{width}s}" for n in columns)]
    for label, key in (("listed", "listed"), ("could not be read (left out)", "errors"),
                       ("out of scope (always flagged)", "out_of_scope"),
                       ("scored in scope", "in_scope")):
        lines.append(f"{label:30s}" + "".join(f"{getattr(counts, key):>{width}d}"
                                              for counts in columns.values()))
    if site.images:
        lines.append(f"(images per label; an image may carry several labels or none, "
                     f"'{ALL_IMAGES}' counts each once)")
    in_scope = site.images.in_scope if site.images else \
        sum(c.in_scope for c in site.counts.values())
    findings = site.findings or {site.positive_class: SiteFinding(
        site.target_sensitivity, site.auc, site.auc_low, site.auc_high, site.at_build_threshold,
        site.at_site_threshold)}
    for finding, figures in findings.items():
        negatives = (f"images without {finding}" if site.images else
                     " / ".join(n for n in names if n != finding))
        lines += ["", (f"Finding {finding}, one against the rest, on the " if site.findings
                       else "On the ") +
                  f"{in_scope} in-scope images "
                  f"(95% intervals: Wilson; AUC: DeLong): AUC "
                  f"{_interval(figures.auc, figures.auc_low, figures.auc_high)}"]
        for label, point in (("build threshold", figures.at_build_threshold),
                             ("site threshold", figures.at_site_threshold)):
            target = (f" (target sensitivity {figures.target_sensitivity:g})"
                      if point is figures.at_site_threshold else "")
            sens = _interval(point.sensitivity, point.sensitivity_low, point.sensitivity_high)
            spec = _interval(point.specificity, point.specificity_low, point.specificity_high)
            lines += [f"at the {label} {point.threshold:.4f}{target}:",
                      f"  sensitivity {sens}: {point.tp} of {point.tp + point.fn} {finding} "
                      "flagged",
                      f"  specificity {spec}: {point.tn} of {point.tn + point.fp} {negatives} not "
                      + (f"flagged for {finding}" if site.findings else "flagged"),
                      f"  as deployed*: sensitivity {point.deployed_sensitivity:.3f}, specificity "
                      f"{point.deployed_specificity:.3f}"]
    if site.findings:
        lines += ["", "Site thresholds " + ", ".join(
            f"{finding} {t:.4f}" for finding, t in site.finding_thresholds.items()) +
            ": for each finding, the highest threshold at which at least its target share of "
            "the site's in-scope images of that finding is flagged (probability of that finding "
            ">= threshold); a case is flagged when any finding reaches its threshold."]
    else:
        lines += ["", f"Site threshold {site.threshold:.4f}: {site.rule}, target "
                      f"{site.target_sensitivity:g}."]
    lines.append("* as deployed: over every scored image, out-of-scope images counted as flagged "
                 "(they always go to a person); unreadable files are left out (error rows).")
    return "\n".join(lines)
