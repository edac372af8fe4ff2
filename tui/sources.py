"""Where the app finds things: bundles (``dist/*/manifest.json`` and ``--bundle``), the benchmark
report, the default results folder. Glue only: manifests are read with :mod:`runtime.bundle.load`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from runtime.bundle.artifacts import read_manifest
from runtime.bundle.site import applies_to, read_site_calibration
from runtime.contract.manifest import (
    ArtifactEntry,
    BenchmarkReport,
    ContractError,
    Manifest,
    Metrics,
    SiteCalibration,
    report_from_dict,
)
from runtime.errors import BundleError

DEFAULT_REPORT = Path("benchmarks") / "reports" / "report.json"
REPORT_COMMAND = "python -m benchmarks run --target cpu"
BUILD_COMMAND = "python -m converters build --target cpu"


@dataclass(eq=False)
class Choice:
    """One artifact of one bundle, as offered in the model picker."""

    bundle: Path
    manifest: Manifest
    entry: ArtifactEntry
    site: SiteCalibration | None = None  # sha256-checked when the bundle was found

    @property
    def artifact(self) -> str:
        return self.entry.path

    @property
    def site_in_force(self) -> SiteCalibration | None:
        """The site calibration when it was measured with this artifact (runtime.bundle.load's rule)."""
        return self.site if self.site and applies_to(self.site, self.artifact) else None

    @property
    def threshold(self) -> float:
        """The threshold the runtime uses for this artifact: the site's, else the build's."""
        site = self.site_in_force
        return site.threshold if site else self.manifest.threshold

    @property
    def thresholds(self) -> dict[str, float]:
        """Every finding's threshold the runtime uses for this artifact, in the model's finding
        order (runtime.bundle.load.Bundle.thresholds' rule): the site's, else the build's."""
        site = self.site_in_force
        calibrated = site.thresholds() if site else {}
        return {label: calibrated.get(label, build)
                for label, build in self.manifest.thresholds().items()}

    @property
    def target(self) -> str:
        return self.manifest.target

    @property
    def is_default(self) -> bool:
        return self.artifact == self.manifest.default_artifact

    @property
    def test_metrics(self) -> Metrics:
        return self.entry.metrics.test

    def label(self) -> str:
        provisional = " (provisional)" if self.entry.gate.status == "provisional" else ""
        return (f"{self.target} {self.entry.format} · sens "
                f"{self.test_metrics.sensitivity:.3f}{provisional}")

    def key(self) -> str:
        return f"{os.path.abspath(self.bundle)}::{self.artifact}"


def find_bundles(explicit: list[Path], search: list[Path]) -> tuple[list[Choice], list[str]]:
    """Every artifact of every bundle found (explicit ones first), and the problems met."""
    folders: list[Path] = list(explicit)
    for root in search:
        if root.is_dir():
            folders += sorted(p.parent for p in root.glob("*/manifest.json"))
    seen: set[str] = set()
    choices: list[Choice] = []
    problems: list[str] = []
    for folder in folders:
        key = os.path.realpath(folder)
        if key in seen:
            continue
        seen.add(key)
        try:
            manifest = read_manifest(folder)
            site = read_site_calibration(folder, manifest)
        except BundleError as exc:
            problems.append(str(exc))
            continue
        entries = sorted(manifest.artifacts, key=lambda e: e.path != manifest.default_artifact)
        choices += [Choice(folder, manifest, entry, site) for entry in entries]
    return choices, problems


def default_out(folder: Path, choice: Choice | None) -> Path:
    """``results/<folder>-<target>-<format>-<precision>`` beside the current folder, or under
    the home folder when the current folder is inside the input folder (never written to)."""
    name = Path(os.path.abspath(folder)).name or "root"
    if choice is not None:
        name += f"-{choice.target}-{choice.entry.format}"
    out = Path("results") / name
    folder_abs, out_abs = Path(os.path.abspath(folder)), Path(os.path.abspath(out))
    if out_abs == folder_abs or folder_abs in out_abs.parents:
        out = Path.home() / "cxr-results" / name
    return out


def read_report(path: Path) -> tuple[BenchmarkReport | None, str | None]:
    """The benchmark report.json (typed), or why there is none to show."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path} cannot be read: {exc}"
    try:
        return report_from_dict(data, str(path)), None
    except ContractError as exc:
        return None, str(exc)
