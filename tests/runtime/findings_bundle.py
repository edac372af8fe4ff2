"""A bundle with several findings for the consumers' tests, made from the real cpu bundle.

The reference model's two outputs both become findings: PNEUMONIA first, then its other output
relabelled EFFUSION (a made-up second finding with its own threshold), as in a multi-label model
where every label is a finding and a case none reaches is ``NORMAL``. The artifacts, reference set
and scope guard stay the real ones; only the manifest's labels and findings change. Real X-rays
then flag by either finding, so every consumer (SR, TUI, calibration, PACS, Ray) meets rows named
by a finding other than the first.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

#: the second finding: the reference model's NORMAL output, renamed
SECOND = "EFFUSION"
#: its threshold: an X-ray the reference model finds this likely normal is flagged as SECOND
SECOND_THRESHOLD = 0.9
#: the labels of the test bundle, in output order
CLASSES = [SECOND, "PNEUMONIA"]


def several_findings_bundle(source: Path, out: Path, second: float = SECOND_THRESHOLD,
                            task: str = "multiclass") -> Path:
    """A copy of ``source`` (a reference bundle) whose findings are PNEUMONIA and EFFUSION;
    ``task="multilabel"`` declares them independent labels (an image may carry both or none)."""
    from runtime.contract.manifest import MANIFEST, dump_manifest, load_manifest

    shutil.copytree(source, out)
    manifest = load_manifest(out)
    assert manifest.model.classes == ["NORMAL", "PNEUMONIA"], manifest.model.classes
    model = dataclasses.replace(manifest.model, classes=list(CLASSES),
                                findings=["PNEUMONIA", SECOND], task=task)
    manifest = dataclasses.replace(
        manifest, model=model,
        finding_thresholds={"PNEUMONIA": manifest.threshold, SECOND: second},
        finding_threshold_info={"PNEUMONIA": manifest.threshold_info,
                                SECOND: dataclasses.replace(manifest.threshold_info)})
    dump_manifest(manifest, out / MANIFEST)
    return out
