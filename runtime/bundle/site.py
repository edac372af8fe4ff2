"""A bundle's site calibration: read it (sha256-checked against the manifest) and say it in words.

``python -m converters calibrate`` writes a copy of a bundle with ``site_calibration.json``
(:class:`runtime.contract.manifest.SiteCalibration`), declared in the manifest with its sha256. Loading a
bundle verifies that file like an artifact (a changed calibration is refused, never used); its
``threshold`` then replaces the build threshold for the artifact it was measured with
(:attr:`runtime.bundle.load.Bundle.threshold`); for a model with several findings, its
``finding_thresholds`` replace every finding's (:attr:`runtime.bundle.load.Bundle.thresholds`).
"""

from __future__ import annotations

import json
from pathlib import Path

from runtime.contract.manifest import (
    ContractError,
    Manifest,
    SiteCalibration,
    site_calibration_from_dict,
)


def read_site_calibration(root: str | Path, manifest: Manifest) -> SiteCalibration | None:
    """The bundle's site calibration (None when it has none); BundleError when it was changed."""
    from runtime.bundle.files import verify_file
    from runtime.errors import BundleError

    entry = manifest.site_calibration
    if entry is None:
        return None
    path = verify_file(root, entry)
    try:
        return site_calibration_from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
    except (OSError, ValueError) as exc:  # ContractError is a ValueError
        text = str(exc) if isinstance(exc, ContractError) else f"{path} cannot be read: {exc}"
        raise BundleError(text) from None


def applies_to(site: SiteCalibration, artifact: str) -> bool:
    """Whether the site threshold was measured with ``artifact`` (else the build one holds)."""
    return site.source.artifact == artifact


def site_words(site: SiteCalibration) -> str:
    """One line: whose calibration, when, on how many images, the threshold and what it gives."""
    counts = ", ".join(f"{c.in_scope} {name}" for name, c in site.counts.items())
    counts = (f"{site.images.in_scope} in-scope images; with label: {counts}" if site.images
              else f"{counts} in-scope images")  # multi-label: images per label do not add up
    point = site.at_site_threshold
    if site.finding_thresholds:  # several findings: each one's threshold and sensitivity
        each = "; ".join(
            f"{label} {threshold:.4f} (sensitivity "
            f"{site.findings[label].at_site_threshold.sensitivity:.3f})"
            if label in site.findings else f"{label} {threshold:.4f}"
            for label, threshold in site.finding_thresholds.items())
        return (f"site calibration \"{site.site}\" ({site.created_at[:10]}, {counts}): "
                f"thresholds {each} for {site.source.artifact}")
    return (f"site calibration \"{site.site}\" ({site.created_at[:10]}, {counts}): "
            f"threshold {site.threshold:.4f} for {site.source.artifact}, sensitivity "
            f"{point.sensitivity:.3f} ({point.sensitivity_low:.3f}–"
            f"{point.sensitivity_high:.3f}), "
            f"specificity {point.specificity:.3f} ({point.specificity_low:.3f}–"
            f"{point.specificity_high:.3f})")


def site_summary(site: SiteCalibration) -> dict:
    """What summary.json records about the calibration in force."""
    return {"site": site.site, "created_at": site.created_at, "threshold": site.threshold,
            "artifact": site.source.artifact, "target_sensitivity": site.target_sensitivity,
            "counts": {name: c.in_scope for name, c in site.counts.items()},
            "sensitivity": site.at_site_threshold.sensitivity,
            "specificity": site.at_site_threshold.specificity,
            **({"thresholds": site.thresholds()} if site.finding_thresholds else {}),
            **({"images": site.images.in_scope} if site.images else {})}
