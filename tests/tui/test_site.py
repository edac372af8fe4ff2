"""The app shows a bundle's site calibration (and uses its threshold), and refuses a changed one."""

from __future__ import annotations

import json
import shutil

import pytest

from runtime.contract.manifest import SITE_CALIBRATION
from tests.converters.calibration_data import SITE
from tests.tui.helpers import SIZE, bundle_screen_text
from tui.app import CxrApp
from tui.sources import find_bundles


def test_the_model_picker_uses_the_site_threshold_for_the_calibrated_artifact(site_calibration):
    choices, problems = find_bundles([site_calibration["out"]], [])
    assert not problems
    by_artifact = {c.artifact: c for c in choices}
    default = by_artifact[choices[0].manifest.default_artifact]
    assert default.site_in_force is not None and default.site_in_force.site == SITE
    assert default.threshold == default.site.threshold != default.manifest.threshold
    others = [c for c in choices if c is not default]
    assert others and all(c.site_in_force is None and c.threshold == c.manifest.threshold
                          for c in others)


def test_a_changed_calibration_is_a_problem_not_a_choice(site_calibration, tmp_path):
    copy = tmp_path / "cpu-site"
    shutil.copytree(site_calibration["out"], copy)
    data = json.loads((copy / SITE_CALIBRATION).read_text())
    data["site"] = "Another hospital"
    (copy / SITE_CALIBRATION).write_text(json.dumps(data, indent=2) + "\n")
    choices, problems = find_bundles([copy], [])
    assert not choices and len(problems) == 1 and SITE_CALIBRATION in problems[0]


@pytest.mark.asyncio
async def test_the_bundle_screen_shows_the_site_name_date_and_counts(site_calibration):
    app = CxrApp(bundles=[site_calibration["out"]])
    async with app.run_test(size=SIZE) as pilot:
        body = await bundle_screen_text(pilot, app)
    site = app.choice.site
    assert f"Site calibration: {SITE}" in body and site.created_at in body
    assert "in force for this artifact" in body
    assert f"{site.counts['PNEUMONIA'].in_scope} used" in body
    assert f"{site.threshold:.4f}" in body
