"""The review queue of a results folder: which cases a doctor reviews, in which order, and where
the review resumes. Reads ``results.csv``, ``run.json`` and ``summary.json`` (never writes them);
decisions go through :class:`runtime.clinic.review.ReviewLog` (``review.csv``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from runtime.clinic.review import CaseReview, ReviewLog
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


@dataclass(frozen=True)
class Case:
    """One case to review: a flagged or out-of-scope row of results.csv."""

    row: dict[str, str]
    file: Path  # the image file (input folder / path)

    @property
    def path(self) -> str:
        return self.row["path"]

    @property
    def probability(self) -> float:
        try:
            return float(self.row.get("probability") or "nan")
        except ValueError:
            return math.nan

    @property
    def probabilities(self) -> dict[str, float]:
        """Every label's probability (empty for a row written before the p_<label> columns)."""
        return row_probabilities(self.row)

    @property
    def prediction(self) -> str:
        return self.row.get("prediction", "")

    @property
    def out_of_scope(self) -> bool:
        return self.row.get("scope") == "out"

    @property
    def scope_reason(self) -> str:
        return self.row.get("scope_reason", "")


@dataclass
class ReviewFolder:
    """A results folder opened for review: its cases in review order and its decision log."""

    out: Path
    input_folder: Path
    bundle: str
    artifact: str
    threshold: str  # as the run recorded it (the first finding's)
    cases: list[Case]
    log: ReviewLog
    #: every finding's threshold, for a model with several findings (run.json ``thresholds``);
    #: empty for a model with one (``threshold`` is it)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def several(self) -> bool:
        """Whether the run's model has several findings."""
        return len(self.thresholds) > 1

    def finding_of(self, case: Case) -> str:
        """The finding the case's row names (what a confirmation confirms); "" for a model with
        one finding, or a row without every label's probability."""
        return named_finding(case.row, self.thresholds) if self.several else ""

    def threshold_of(self, case: Case) -> str:
        """The threshold of the finding the case's row names, as the review log records it."""
        finding = self.finding_of(case)
        return repr(self.thresholds[finding]) if finding else self.threshold

    def decisions(self) -> dict[str, CaseReview]:
        return self.log.cases()

    def reviewed(self) -> int:
        """How many cases of the queue have a current decision."""
        state = self.decisions()
        return sum(1 for case in self.cases if state.get(case.path, CaseReview("")).decision)

    def first_unreviewed(self) -> int:
        """Where the review resumes: the first case without a decision (0 when all have one)."""
        state = self.decisions()
        for index, case in enumerate(self.cases):
            if not state.get(case.path, CaseReview("")).decision:
                return index
        return 0

    def index_of(self, path: str) -> int | None:
        return next((i for i, case in enumerate(self.cases) if case.path == path), None)


def review_order(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows a doctor reviews: flagged in-scope cases, highest probability first, then the
    out-of-scope ones (their probability is not to be relied on), also highest first."""
    def probability(row: dict[str, str]) -> float:
        try:
            value = float(row.get("probability") or "nan")
        except ValueError:
            value = math.nan
        return value if value == value else -1.0

    picked = [r for r in rows if r.get("status") == "ok" and
              (r.get("flagged") == "1" or r.get("scope") == "out")]
    return sorted(picked, key=lambda r: (r.get("scope") == "out", -probability(r), r["path"]))


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path} cannot be read ({exc}); run triage again into another "
                           "results folder") from exc


def open_review(out: Path) -> ReviewFolder:
    """Open a results folder written by ``python -m runtime triage`` (or the app) for review."""
    out = Path(out)
    if not (out / RESULTS).is_file():
        raise ResultsError(f"{out} holds no {RESULTS}: choose the results folder of a triage run "
                           "(it has results.csv and run.json), or run triage first")
    run = _json(out / RUN_INFO)
    if not run.get("folder"):
        raise ResultsError(f"{out / RUN_INFO} is missing or names no input folder, so the X-rays "
                           "cannot be found; run triage again into another results folder")
    summary = _json(out / SUMMARY)
    bundle = (summary.get("bundle") or {}).get("bundle", "")
    folder = Path(run["folder"])
    cases = [Case(row, folder / row["path"]) for row in review_order(read_rows(out / RESULTS))]
    threshold = run.get("threshold")
    return ReviewFolder(out, folder, str(bundle), str(run.get("artifact", "")),
                        "" if threshold is None else str(threshold), cases, ReviewLog(out),
                        run_thresholds(run))
