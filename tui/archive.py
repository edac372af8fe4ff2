"""Results back to the archive: DICOM Structured Reports written by :mod:`runtime.clinic.report_sr`
(optional: it needs the ``[dicom]`` extra, highdicom), into a folder beside the results."""

from __future__ import annotations

from pathlib import Path

from tui import fmt

DICOM_EXTRA = "pip install -c constraints.txt 'cxr-deploy-kit[dicom]'"


def sr_folder(results: Path) -> Path:
    """``<results>/../<results-name>-sr``: beside the results, never inside the input folder."""
    results = Path(results)
    return results.parent / f"{results.resolve().name}-sr"


def write_sr(results: Path) -> tuple[bool, str]:
    """Write one SR per DICOM image of ``results``; (done, what to tell the user)."""
    try:
        from runtime.clinic.report_sr import write_reports
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("runtime"):
            return False, ("This installation has no DICOM SR writer (runtime.clinic.report_sr); "
                           "update the kit to write Structured Reports.")
        return False, (f"DICOM SR reports need the [dicom] extra ({exc.name} is not installed): "
                       f"{DICOM_EXTRA}")
    out = sr_folder(results)
    try:
        written = write_reports(Path(results), out)
    except ModuleNotFoundError as exc:
        return False, (f"DICOM SR reports need the [dicom] extra ({exc.name} is not installed): "
                       f"{DICOM_EXTRA}")
    except ImportError as exc:  # runtime.clinic.report_sr.SRUnavailable: its message names the extra
        return False, str(exc)
    except Exception as exc:  # the writer's own errors are meant for the user
        return False, f"No SR written: {exc}"
    if not written:
        return True, (f"No DICOM image in {fmt.shown(results)}: no SR to write (Structured "
                      "Reports refer to DICOM source images only).")
    return True, f"Wrote {len(written)} DICOM SR file(s) to {fmt.shown(out)}"
