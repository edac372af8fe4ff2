"""Compare two triage runs of the same bundle (x86 host vs emulated aarch64) and record the result.

Works on the runtime's ``results.csv`` (columns ``path, status, prediction, probability, flagged,
latency_ms, error`` and one ``p_<label>`` per label: every output column is compared), so it
compares what a user of the kit would actually get on each machine.
The verification report (``verification.json`` + ``verification.md``) is written into the bundle
folder, and a summary goes into ``manifest.json`` under ``verification.aarch64_emulated``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from runtime.running.results import row_probabilities

REPORT_JSON = "verification.json"
REPORT_MD = "verification.md"
MANIFEST_KEY = "verification"
EMULATION_KEY = "aarch64_emulated"


class CompareError(RuntimeError):
    """A results file is missing or unreadable."""


@dataclass(frozen=True)
class Row:
    key: str  # CLASS/file name: the same image on both machines, wherever it was copied
    status: str
    prediction: str
    probability: float | None
    flagged: bool | None
    error: str = ""
    decimals: int | None = None  # how many decimals the results file wrote the probability with
    #: every label's probability (results.csv's p_<label> columns; empty in older results)
    probabilities: dict[str, float] = field(default_factory=dict)

    def largest_difference(self, other: Row) -> float:
        """The largest |difference| to ``other`` over the row's probability and every label's
        probability both rows hold (every output column of the model)."""
        common = self.probabilities.keys() & other.probabilities.keys()
        return max([abs(self.probability - other.probability),  # type: ignore[operator]
                    *(abs(self.probabilities[k] - other.probabilities[k]) for k in common)])


def _key(path: str) -> str:
    parts = Path(path.replace("\\", "/")).parts
    return "/".join(parts[-2:])


def _bool(text: str) -> bool | None:
    text = (text or "").strip().lower()
    if text in ("1", "true", "yes", "y"):
        return True
    if text in ("0", "false", "no", "n"):
        return False
    return None


def _decimals(text: str) -> int | None:
    text = (text or "").strip()
    if not text or "e" in text.lower():
        return None
    return len(text.partition(".")[2])


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _label_probabilities(rec: dict) -> dict[str, float]:
    return row_probabilities({k: v for k, v in rec.items() if k is not None and v is not None})


def read_results(path: Path) -> dict[str, Row]:
    """The rows of a runtime ``results.csv``, keyed by ``CLASS/filename``."""
    if not path.is_file():
        raise CompareError(f"no results file at {path}")
    rows: dict[str, Row] = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "status", "probability", "flagged"} - set(reader.fieldnames or ())
        if missing:
            raise CompareError(f"{path} lacks columns {sorted(missing)}")
        for rec in reader:
            key = _key(rec["path"])
            rows[key] = Row(key=key, status=(rec.get("status") or "").strip(),
                            prediction=(rec.get("prediction") or "").strip(),
                            probability=_float(rec.get("probability", "")),
                            flagged=_bool(rec.get("flagged", "")),
                            error=(rec.get("error") or "").strip(),
                            decimals=_decimals(rec.get("probability", "")),
                            probabilities=_label_probabilities(rec))
    return rows


@dataclass
class Comparison:
    """Host vs emulated answers for one artifact run with one engine."""

    artifact: str
    engine: str
    n_images: int  # images on both sides with a probability
    agreement: float  # fraction of those with the same flag (the clinical decision)
    prediction_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    tolerance: float
    resolution: float | None = None  # half a unit of the last decimal written: a diff of 0 means
    # "below this"
    missing: list[str] = field(default_factory=list)  # on one side only
    errors: list[str] = field(default_factory=list)  # status != ok on either side
    disagreements: list[dict] = field(default_factory=list)
    worst: list[dict] = field(default_factory=list)
    in_bundle: bool = True  # False: an extra engine check, not an artifact the target ships

    @property
    def passed(self) -> bool:
        return (self.n_images > 0 and not self.missing and not self.errors
                and self.agreement == 1.0 and self.max_abs_diff <= self.tolerance)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def compare_results(host: dict[str, Row], emulated: dict[str, Row], *, artifact: str,
                    engine: str, tolerance: float,
                    in_bundle: bool = True, worst: int = 5) -> Comparison:
    """Same images, same bundle: do the two machines give the same probabilities and flags,
    within ``tolerance`` of each other?"""
    keys = sorted(set(host) | set(emulated))
    missing = [k for k in keys if k not in host or k not in emulated]
    errors, diffs, same_flag, same_pred, disagreements = [], [], 0, 0, []
    for key in keys:
        if key in missing:
            continue
        a, b = host[key], emulated[key]
        if a.status != "ok" or b.status != "ok" or a.probability is None or b.probability is None:
            errors.append(f"{key}: host {a.status} {a.error!r}, emulated {b.status} {b.error!r}")
            continue
        diff = a.largest_difference(b)
        diffs.append((diff, key, a, b))
        same_flag += a.flagged == b.flagged
        same_pred += a.prediction == b.prediction
        if a.flagged != b.flagged or a.prediction != b.prediction:
            disagreements.append({"image": key, "host": a.probability, "emulated": b.probability,
                                  "host_flagged": a.flagged, "emulated_flagged": b.flagged})
    n = len(diffs)
    written = [r.decimals for d in diffs for r in (d[2], d[3]) if r.decimals is not None]
    resolution = 0.5 * 10.0 ** -min(written) if written else None
    diffs.sort(key=lambda d: d[0], reverse=True)
    return Comparison(
        artifact=artifact, engine=engine, n_images=n,
        agreement=same_flag / n if n else 0.0,
        prediction_agreement=same_pred / n if n else 0.0,
        max_abs_diff=float(diffs[0][0]) if n else float("nan"),
        mean_abs_diff=float(sum(d[0] for d in diffs) / n) if n else float("nan"),
        tolerance=tolerance, resolution=resolution, missing=missing, errors=errors, disagreements=disagreements,
        worst=[{"image": k, "host": a.probability, "emulated": b.probability, "abs_diff": d}
               for d, k, a, b in diffs[:worst]],
        in_bundle=in_bundle)


# --------------------------------------------------------------------------- report + manifest

def build_report(comparisons: Iterable[Comparison], *, environment: dict, images: dict,
                 command: str, started: str, finished: str, setup: dict | None = None,
                 artifacts_sha256: dict[str, str] | None = None,
                 run_seconds: dict[str, float] | None = None) -> dict:
    """The whole verification as JSON; ``run_seconds``: each check's time, both machines."""
    comparisons = list(comparisons)
    shipped = [c for c in comparisons if c.in_bundle]
    return {
        "kind": "aarch64_emulated",
        "passed": bool(shipped) and all(c.passed for c in shipped),
        "started": started, "finished": finished, "command": command,
        "environment": environment, "images": images, "setup": setup or {},
        "artifacts_sha256": artifacts_sha256 or {},
        "run_seconds": run_seconds or {},
        "results": [c.as_dict() for c in comparisons],
    }


def manifest_entry(report: dict) -> dict:
    """The summary kept in the manifest (the full report stays in verification.json)."""
    env = report["environment"]
    inside = env.get("emulated", {})
    entry = {
        "passed": report["passed"],
        "date": report["finished"],
        "qemu": env.get("qemu"),
        "qemu_cpu": env.get("qemu_cpu"),
        "debian": inside.get("debian"),
        "glibc": inside.get("glibc"),
        "python": inside.get("python"),
        "onnxruntime": inside.get("onnxruntime"),
        "openvino": inside.get("openvino"),
        "host": {k: env.get("host", {}).get(k) for k in ("machine", "python", "onnxruntime",
                                                         "openvino")},
        "n_images": max((r["n_images"] for r in report["results"]), default=0),
        "artifacts": {},
        "engine_checks": {},
        "report": REPORT_JSON,
    }
    for res in report["results"]:
        summary = {"engine": res["engine"], "agreement": res["agreement"],
                   "max_abs_diff": _round(res["max_abs_diff"]), "n_images": res["n_images"],
                   "passed": res["passed"]}
        if res.get("resolution") is not None and res["max_abs_diff"] == 0:
            summary["max_abs_diff_below"] = _round(res["resolution"])
        if res["in_bundle"]:
            sha = report.get("artifacts_sha256", {}).get(res["artifact"])
            entry["artifacts"][res["artifact"]] = {**summary, **({"sha256": sha} if sha else {})}
        else:
            entry["engine_checks"][f"{res['engine']}:{res['artifact']}"] = summary
    if not entry["engine_checks"]:
        del entry["engine_checks"]
    return entry


def _round(value: float) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return float(f"{value:.3g}")


def render_markdown(report: dict) -> str:
    env = report["environment"]
    inside = env.get("emulated", {})
    host = env.get("host", {})
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines = [
        f"# Emulated aarch64 verification: {verdict}",
        "",
        f"{report['finished']} · regenerate (as root): `{report['command']}`",
        "",
        f"The bundle ran with `{env.get('runner', 'python -m runtime triage')}` inside an aarch64 "
        "Debian root filesystem under qemu user-mode emulation, and on this x86 host, over the same "
        "real test images (OpenVINO through a copy of the bundle that names it, with its answers "
        "on this host as the self-check's reference). This "
        "proves the artifacts load and give the same answers on aarch64 builds of the engines; "
        "it says nothing about speed (emulation is ~300x slower than a real ARM CPU).",
        "",
        "| | emulated aarch64 | x86 host |",
        "|---|---|---|",
        f"| machine | {inside.get('machine')} (qemu, QEMU_CPU={env.get('qemu_cpu')}) "
        f"| {host.get('machine')} |",
        f"| system | Debian {inside.get('debian')}, glibc {inside.get('glibc')} | "
        f"{host.get('system', '')} |",
        f"| python | {inside.get('python')} | {host.get('python')} |",
        f"| onnxruntime | {inside.get('onnxruntime')} | {host.get('onnxruntime')} |",
        f"| openvino | {inside.get('openvino')} | {host.get('openvino')} |",
        "",
        f"qemu: {env.get('qemu')}",
        "",
        f"Images: {report['images'].get('n')} from `{report['images'].get('source')}` "
        f"({', '.join(f'{k}: {v}' for k, v in report['images'].get('per_class', {}).items())}).",
        "",
        "| artifact | engine | ships | images | decision agreement | max abs diff | "
        "mean abs diff | tolerance | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in report["results"]:
        lines.append(
            f"| {res['artifact']} | {res['engine']} | {'yes' if res['in_bundle'] else 'check only'}"
            f" | {res['n_images']} | {res['agreement']:.4f} | {_fmt(res['max_abs_diff'])} | "
            f"{_fmt(res['mean_abs_diff'])} | {res['tolerance']:g} | "
            f"{'pass' if res['passed'] else 'FAIL'} |")
    lines += ["", "Tolerance on the probability difference: the artifact format's device "
                  "tolerance, what the runtime's self-check allows any device (unless "
                  "`--tolerance` is given). Decisions are the flag (probability >= the bundle's "
                  "threshold). A max abs diff"
                  " of 0 means below the precision the results file was written with ("
                  + ", ".join(sorted({_fmt(r["resolution"]) for r in report["results"]
                                      if r.get("resolution") is not None})) + ")."]
    for res in report["results"]:
        problems = res["errors"] + res["missing"] + [
            f"{d['image']}: host {d['host']:.4f} vs emulated {d['emulated']:.4f}"
            for d in res["disagreements"]]
        if problems:
            lines += ["", f"## {res['artifact']} ({res['engine']}): problems", ""]
            lines += [f"- {p}" for p in problems[:20]]
    for failure in report.get("failures", []):
        lines += ["", f"- FAILED: {failure}"]
    run_seconds = report.get("run_seconds") or {}
    if run_seconds:
        lines += ["", "Time per check (host run + emulated run): "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in run_seconds.items()) + "."]
    setup = report.get("setup") or {}
    if setup:
        lines += ["", "Root filesystem setup (one-time, cached): "
                  + ", ".join(f"{k} {v / 60:.1f} min" for k, v in setup.items()) + "."]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.2e}"


def write_report(bundle: Path, report: dict) -> tuple[Path, Path]:
    """``verification.json`` and ``verification.md`` in the bundle folder."""
    return write_report_copy(bundle / Path(REPORT_JSON).stem, report)


def write_report_copy(stem: Path, report: dict) -> tuple[Path, Path]:
    """The report also as ``STEM.json`` and ``STEM.md`` (e.g. the committed copy in
    benchmarks/reports/)."""
    base = stem.with_suffix("") if stem.suffix in (".json", ".md") else stem
    json_path, md_path = base.parent / f"{base.name}.json", base.parent / f"{base.name}.md"
    base.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(json_path, json.dumps(_jsonable(report), indent=2) + "\n")
    _atomic_write(md_path, render_markdown(report))
    return json_path, md_path


def update_manifest(bundle: Path, entry: dict, reports: Iterable[Path] = (),
                    expect_sha256: dict[str, str] | None = None) -> Path:
    """Set the manifest's ``verification.aarch64_emulated = entry`` (through the typed contract).
    Artifact checksums are untouched (the manifest lists artifacts, not itself, so editing it
    cannot break bundle loading); the report files join the manifest's ``files`` list so it
    still describes the folder."""
    from runtime.contract.manifest import FileEntry, dump_manifest, load_manifest

    path = bundle / "manifest.json"
    manifest = load_manifest(bundle)
    if expect_sha256 is not None:
        now = {a.path: a.sha256 for a in manifest.artifacts}
        if now != expect_sha256:
            raise CompareError(f"{path} changed while it was being verified (the bundle was "
                               "rebuilt?): its artifacts are not the ones verified; not "
                               "recording the result, run the verification again")
    manifest.verification[EMULATION_KEY] = _jsonable(entry)
    for report in reports:
        name = report.relative_to(bundle).as_posix()
        manifest.files = [f for f in manifest.files if f.path != name]
        manifest.files.append(FileEntry(name, _sha256(report), report.stat().st_size))
    tmp = path.with_name(f".{path.name}.tmp")
    dump_manifest(manifest, tmp)
    os.replace(tmp, path)
    return path


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
