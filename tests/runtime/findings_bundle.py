"""A bundle with several findings for the consumers' tests, made from the real cpu bundle.

The reference model's two labels both become findings (PNEUMONIA first, then NORMAL, each with its
own threshold): the artifacts, reference set and scope guard stay the real ones, only the manifest
says there are two findings. Real X-rays then flag by either finding, so every consumer (SR, TUI,
calibration, PACS, Ray) meets rows named by a finding other than the first.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

#: NORMAL's threshold: a case the model is this sure is normal is "flagged" as NORMAL (a finding
#: made up for the test; the real X-rays give both kinds of rows with the reference model)
NORMAL_THRESHOLD = 0.9


def several_findings_bundle(source: Path, out: Path, normal: float = NORMAL_THRESHOLD) -> Path:
    """A copy of ``source`` (a reference bundle) whose findings are PNEUMONIA and NORMAL."""
    from runtime.contract.manifest import MANIFEST, dump_manifest, load_manifest

    shutil.copytree(source, out)
    manifest = load_manifest(out)
    model = dataclasses.replace(manifest.model, findings=["PNEUMONIA", "NORMAL"])
    info = dataclasses.replace(manifest.threshold_info)
    manifest = dataclasses.replace(
        manifest, model=model,
        finding_thresholds={"PNEUMONIA": manifest.threshold, "NORMAL": normal},
        finding_threshold_info={"PNEUMONIA": manifest.threshold_info, "NORMAL": info})
    dump_manifest(manifest, out / MANIFEST)
    return out
