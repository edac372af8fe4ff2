"""What the population check does to the work: cases sent to a doctor with and without it.

``python -m benchmarks.population_work --bundle dist/cpu --bundle dist/clinical/cpu``: for each
bundle, ``runtime triage`` of the Kermany test split (``kermany_test_224``: the children the
models were made for) and of ``adult_cxr`` (adults from two other hospitals), twice in the same
run: once as the bundle is, once with its population check taken away (everything else the same:
the scope rules, the feature guard, the model, the threshold). Counts from each ``results.csv``:

- sent to a doctor (flagged: the model's finding, or out of scope) and cleared;
- in and out of scope, and out of scope by the population check;
- on the Kermany test split, by its label: the NORMAL X-rays sent to a doctor (the reads the check
  adds) and the PNEUMONIA X-rays cleared (missed);
- on ``adult_cxr``, the model's calls against the manifest's finding (PNEUMONIA: a finding that
  names Pneumonia, or Hannover's COVID-19 inpatients; NORMAL: NIH's "No Finding"; other findings
  are not counted): how many calls are wrong and how many of those are marked out of scope.

Writes ``benchmarks/reports/population_work.{json,md}`` (``--out``); prints where. Nothing is
asserted: the figures are what triage did on this data.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

from runtime.bundle.load import load_bundle

#: the image sets, folders under the data folder
SETS = ("kermany_test_224", "adult_cxr")
REPORT = Path(__file__).parent / "reports" / "population_work"
#: the words a row out of scope by the population check carries (runtime.judging.population)
CHECK_WORDS = "(population check "


def adult_labels(folder: Path) -> dict[str, str]:
    """``adult_cxr``'s files (relative path) -> NORMAL / PNEUMONIA, from its manifest's finding
    (files with other findings are left out)."""
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels = {}
    for row in rows:
        findings = row["finding"].split("|")
        if "Pneumonia" in findings or "COVID-19" in findings:
            labels[row["path"]] = "PNEUMONIA"
        elif findings == ["No Finding"]:
            labels[row["path"]] = "NORMAL"
    return labels


def kermany_labels(folder: Path) -> dict[str, str]:
    """The Kermany test split's files -> their label folder."""
    return {p.relative_to(folder).as_posix(): p.parent.name
            for p in folder.glob("*/*") if p.parent.name in ("NORMAL", "PNEUMONIA")}


def triage_rows(folder: Path, bundle, out: Path, workers: int) -> list[dict[str, str]]:
    """``runtime triage`` of ``folder`` with ``bundle`` into ``out``; its results.csv rows."""
    from runtime.running.triage import triage

    triage(folder, bundle, out, workers=workers)
    with (out / "results.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def counts(rows: list[dict[str, str]], labels: dict[str, str]) -> dict:
    """The work in one results.csv (see the module's words)."""
    ok = [r for r in rows if r["status"] == "ok"]
    out = [r for r in ok if r["scope"] == "out"]
    labelled = [r for r in ok if r["path"] in labels]
    return {
        "images": len(ok), "errors": len(rows) - len(ok),  # errors: e.g. its manifest.csv
        "sent_to_doctor": sum(r["flagged"] == "1" for r in ok),
        "cleared": sum(r["flagged"] == "0" for r in ok),
        "in_scope": len(ok) - len(out), "out_of_scope": len(out),
        "out_by_population_check": sum(CHECK_WORDS in r["scope_reason"] for r in out),
        "labelled": len(labelled),
        "normal_sent": sum(labels[r["path"]] == "NORMAL" and r["flagged"] == "1"
                           for r in labelled),
        "pneumonia_cleared": sum(labels[r["path"]] == "PNEUMONIA" and r["flagged"] == "0"
                                 for r in labelled),
    }


def wrong_calls(rows: list[dict[str, str]], labels: dict[str, str], threshold: float,
                positive: str) -> dict:
    """The model's own calls (probability >= threshold, whatever the scope) that disagree with
    the label, and how many of them the run marked out of scope (by the check, or at all)."""
    wrong = [r for r in rows if r["status"] == "ok" and r["path"] in labels
             and (float(r["probability"]) >= threshold) != (labels[r["path"]] == positive)]
    return {"wrong": len(wrong), "marked_out": sum(r["scope"] == "out" for r in wrong),
            "marked_out_by_check": sum(CHECK_WORDS in r["scope_reason"] for r in wrong)}


def measure_bundle(path: Path, data: Path, workers: int, work: Path) -> dict:
    """Both runs of both sets for one bundle."""
    bundle = load_bundle(path, device="cpu")
    if bundle.population_check is None:
        raise SystemExit(f"{path} has no population check: rebuild it from a checkpoint with "
                         "population_check.onnx beside it, or with --out-of-population DIR")
    without = dataclasses.replace(bundle, population_check=None)
    positive, threshold = bundle.positive_class, bundle.threshold
    fitted_on = bundle.manifest.population_check.fitted_on
    result = {"bundle": str(path), "model": bundle.manifest.model.name,
              "artifact": bundle.artifact.path, "threshold": threshold,
              "limit": bundle.manifest.population_check.limit, "fitted_on": fitted_on,
              "in_sample": in_sample(fitted_on, data), "sets": {}}
    for name in SETS:
        folder = data / name
        labels = adult_labels(folder) if name == "adult_cxr" else kermany_labels(folder)
        runs = {}
        for run, used in (("with", bundle), ("without", without)):
            print(f"  {path} {name}: triage {run} the population check", file=sys.stderr,
                  flush=True)
            rows = triage_rows(folder, used, work / f"{path.as_posix().replace('/', '_')}-"
                                                f"{name}-{run}", workers)
            got = counts(rows, labels)
            got.update(wrong_calls(rows, labels, threshold, positive))
            runs[run] = got
        result["sets"][name] = {"labelled": f"{len(labels)} of the images have a label", **runs}
    return result


def in_sample(fitted_on: str, data: Path) -> list[str]:
    """The measured sets' subfolders the check was fitted on (its figures there are in-sample),
    read from the manifest's ``fitted_on`` ("out of population: nih (581), hannover (243)")."""
    return [f"{name}/{sub.name}" for name in SETS for sub in sorted((data / name).iterdir())
            if sub.is_dir() and f" {sub.name} (" in fitted_on.split("out of population:")[-1]]


def _pct(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.1f}%)" if whole else str(part)


def markdown(results: list[dict], load: str, command: str) -> str:
    """The report's tables."""
    lines = ["# What the population check does to the work", "",
             f"Generated by `{command}`: `runtime triage` of each set with each bundle, with and "
             "without its population check (the same bundle, model, threshold, scope rules and "
             f"feature guard). Machine load (1-min average) at the start: {load}. Adult labels "
             "from `adult_cxr/manifest.csv`: PNEUMONIA = a finding naming Pneumonia or "
             "Hannover's COVID-19; NORMAL = NIH's No Finding; other findings not counted. A wrong "
             "call: the model's probability on the wrong side of the threshold for the label, "
             "whatever the scope.", ""]
    for r in results:
        lines += [f"## {r['bundle']} ({r['model']}; {r['artifact']}, threshold "
                  f"{r['threshold']:.4f}, population check limit {r['limit']:.4f})", "",
                  *([f"The check was fitted on {', '.join(r['in_sample'])}: its figures there "
                     "are in-sample. The honest figures for adults it never saw are the "
                     "cross-source ones (docs/population-check.md, the card's `cross_source`).",
                     ""] if r["in_sample"] else []),
                  "| set | check | images | sent to a doctor | cleared | in scope | out of scope "
                  "| out by the check | NORMAL sent | PNEUMONIA cleared | wrong calls | wrong "
                  "calls marked out |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, s in r["sets"].items():
            for run in ("without", "with"):
                c = s[run]
                lines.append(
                    f"| {name} | {run} | {c['images']} | {_pct(c['sent_to_doctor'], c['images'])} "
                    f"| {c['cleared']} | {_pct(c['in_scope'], c['images'])} | {c['out_of_scope']} "
                    f"| {c['out_by_population_check']} | {c['normal_sent']} | "
                    f"{c['pneumonia_cleared']} | {c['wrong']} of {c['labelled']} | "
                    f"{_pct(c['marked_out'], c['wrong'])} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.population_work",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", action="append", type=Path, default=[],
                        help="a bundle with a population check (repeatable; default dist/cpu "
                             "and dist/clinical/cpu)")
    parser.add_argument("--data", type=Path, default=None,
                        help="the folder holding kermany_test_224/ and adult_cxr/ (default "
                             "$CXR_DATA_DIR, then ../shared/data)")
    parser.add_argument("--workers", type=int, default=2, help="decode workers (default 2)")
    parser.add_argument("--out", type=Path, default=REPORT,
                        help="report path without suffix (default benchmarks/reports/"
                             "population_work)")
    args = parser.parse_args(argv)
    bundles = args.bundle or [Path("dist/cpu"), Path("dist/clinical/cpu")]
    data = args.data or Path(os.environ.get("CXR_DATA_DIR") or "../shared/data")
    missing = [str(data / s) for s in SETS if not (data / s).is_dir()] + \
              [str(b) for b in bundles if not (b / "manifest.json").is_file()]
    if missing:
        print(f"error: not found: {', '.join(missing)} (bundles: `python -m converters build "
              "--target cpu [--model clinical]`; data: --data or $CXR_DATA_DIR)", file=sys.stderr)
        return 2
    load = f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    command = "python -m benchmarks.population_work " + " ".join(
        f"--bundle {b}" for b in bundles)
    with tempfile.TemporaryDirectory(prefix="population-work-") as work:
        results = [measure_bundle(b, data, args.workers, Path(work)) for b in bundles]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    json_path.write_text(json.dumps({"load": load, "command": command, "results": results},
                                    indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown(results, load, command), encoding="utf-8")
    print(markdown(results, load, command))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
