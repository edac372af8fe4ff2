"""``python -m benchmarks.pacs_load``: the DICOM listener under load, beside folder triage.

The same N real chest X-rays (copies of the shared JPEG-baseline CR, each a new SOP instance,
spread over one study per association) are triaged twice with the same bundle, in the same run,
each by the runtime's own command in a fresh process:

1. ``python -m runtime triage FOLDER``: images/s from its summary.json (walk to last row);
2. ``python -m runtime listen`` on loopback, fed by ``--associations`` concurrent pynetdicom
   C-STORE associations: instances acknowledged per second (received, fsynced in the spool), and
   instances per second from the first C-STORE to the last ``results.csv`` row and to the last SR
   written (one SR per image, as the listener writes them; no destination).

Then the listener is stopped and its folder checked: every instance has exactly one row and one
SR (0 lost, 0 duplicated). The load average before and after is recorded: on a shared machine the
figures move with the other work. Writes benchmarks/reports/pacs_load.json and .md.
Exit status: 0 measured (and nothing lost), 1 a run failed or lost/duplicated an instance,
2 bad arguments.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.e2e import default_workers, run_triage_cli
from benchmarks.machine import cpu_facts, kit_revision, load_average, versions
from benchmarks.worker import REPO

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
SOURCE = "dicom/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def make_instances(source: Path, folder: Path, n: int, studies: int) -> list[str]:
    """``n`` copies of ``source`` as new instances in ``studies`` studies; their SOP UIDs."""
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(source)
    folder.mkdir(parents=True)
    study_uids = [generate_uid() for _ in range(studies)]
    uids = []
    for i in range(n):
        ds.StudyInstanceUID = study_uids[i % studies]
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[ds.StudyInstanceUID])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"{i:05d}.dcm", enforce_file_format=True)
        uids.append(str(ds.SOPInstanceUID))
    return uids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _count_rows(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def send(port: int, files: list[Path], acked: list[float]) -> None:
    """One association sending ``files``; appends the time of each success to ``acked``."""
    import pydicom
    from pynetdicom import AE

    ae = AE(ae_title="LOADTEST")
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    ae.add_requested_context(first.SOPClassUID, [first.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRKIT")
    if not assoc.is_established:
        return
    try:
        for path in files:
            status = assoc.send_c_store(pydicom.dcmread(path))
            if getattr(status, "Status", None) == 0:
                acked.append(time.perf_counter())
    finally:
        assoc.release()


def listener_run(folder: Path, bundle: Path, out: Path, associations: int, workers: int,
                 timeout: float) -> dict:
    """Feed the listener ``folder``'s files over concurrent associations; its rates."""
    files = sorted(folder.glob("*.dcm"))
    port = _free_port()
    log = out.with_name("listen.log")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "runtime", "listen", "--bundle",
                                 str(bundle), "--out", str(out), "--host", "127.0.0.1", "--port",
                                 str(port), "--workers", str(workers)], cwd=REPO, env=env,
                                stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "listening as" not in log.read_text(encoding="utf-8"):
            if proc.poll() is not None or time.monotonic() > deadline:
                return {"status": "failed", "error": log.read_text()[-2000:]}
            time.sleep(0.2)
        acked: list[float] = []
        threads = [threading.Thread(target=send, args=(port, files[i::associations], acked))
                   for i in range(associations)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        rows_at = srs_at = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (rows_at is None or srs_at is None):
            if rows_at is None and _count_rows(out / "results.csv") >= len(files):
                rows_at = time.perf_counter()
            if srs_at is None and len(list((out / "sr").glob("*.sr.dcm"))) >= len(files):
                srs_at = time.perf_counter()
            time.sleep(0.1)
        for t in threads:
            t.join()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    if rows_at is None or srs_at is None:
        return {"status": "failed", "error": f"not every instance triaged within {timeout:.0f} s"}
    last_ack = max(acked) if acked else start
    return {"status": "ok", "acknowledged": len(acked),
            "received_per_second": round(len(acked) / (last_ack - start), 2),
            "triaged_per_second": round(len(files) / (rows_at - start), 2),
            "reported_per_second": round(len(files) / (srs_at - start), 2),
            "seconds_to_last_row": round(rows_at - start, 2),
            "seconds_to_last_sr": round(srs_at - start, 2)}


def check_folder(out: Path, uids: list[str]) -> dict:
    """0 lost, 0 duplicated: one row and one SR per instance."""
    from runtime.running.results import read_rows

    paths = collections.Counter(r["path"] for r in read_rows(out / "results.csv"))
    expected = {u + ".dcm" for u in uids}
    srs = {p.name for p in (out / "sr").glob("*.sr.dcm")}
    return {"lost": len(expected - set(paths)),
            "duplicated": sum(n - 1 for n in paths.values()),
            "unexpected": len(set(paths) - expected),
            "errors": sum(1 for r in read_rows(out / "results.csv") if r["status"] != "ok"),
            "sr_missing": len({u + ".dcm.sr.dcm" for u in uids} - srs)}


def markdown(report: dict) -> str:
    folder, listen, check = report["folder_triage"], report["listener"], report["check"]
    return "\n".join([
        "# The DICOM listener under load",
        "",
        (f"{report['instances']} instances (copies of a real {report['source_kind']}) over "
        f"{report['associations']} concurrent C-STORE associations on loopback, beside folder "
        f"triage of the same files, same bundle ({report['bundle']}), same run; "
        f"{report['machine'].get('usable_cpus')} usable CPUs, load average {report['load_before']} before, "
        f"{report['load_after']} after. `python -m benchmarks.pacs_load`, {report['date']}."),
        "",
        "| run | instances/s | seconds |",
        "|---|---:|---:|",
        (f"| folder triage (`runtime triage`, walk to last row) | {folder['images_per_second']} "
        f"| {folder['seconds']} |"),
        f"| listener: acknowledged (spooled + fsynced) | {listen['received_per_second']} | |",
        (f"| listener: first C-STORE to last results.csv row | {listen['triaged_per_second']} "
        f"| {listen['seconds_to_last_row']} |"),
        (f"| listener: first C-STORE to last SR written | {listen['reported_per_second']} "
        f"| {listen['seconds_to_last_sr']} |"),
        "",
        (f"Listener / folder triage (rows): {report['ratio_listener_to_folder']}. "
        f"Lost {check['lost']}, duplicated {check['duplicated']}, error rows {check['errors']}, "
        f"SRs missing {check['sr_missing']}."),
        ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pacs_load",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "dist" / "cpu")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "CXR_DATA_DIR", REPO.parent / "shared" / "data")))
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--associations", type=int, default=4)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    args = parser.parse_args(argv)
    source = args.data / SOURCE
    if not source.is_file() or not (args.bundle / "manifest.json").is_file() or \
            args.instances < args.associations or args.associations < 1:
        print(f"error: needs {source}, a bundle at {args.bundle} (--bundle) and --instances >= "
              "--associations >= 1", file=sys.stderr)
        return EXIT_USAGE
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="cxr-pacs-load-") as tmp:
        tmp_path = Path(tmp)
        uids = make_instances(source, tmp_path / "in", args.instances, args.associations)
        proc, wall = run_triage_cli([str(tmp_path / "in"), "--bundle", str(args.bundle),
                                     "--out", str(tmp_path / "folder"), "--quiet", "--workers",
                                     str(args.workers)], args.timeout)
        if proc.returncode != 0:
            print(f"error: folder triage failed: {proc.stderr[-2000:]}", file=sys.stderr)
            return EXIT_FAIL
        this_run = json.loads((tmp_path / "folder" / "summary.json").read_text())["this_run"]
        listen = listener_run(tmp_path / "in", args.bundle, tmp_path / "listen",
                              args.associations, args.workers, args.timeout)
        if listen["status"] != "ok":
            print(f"error: listener run failed: {listen['error']}", file=sys.stderr)
            return EXIT_FAIL
        check = check_folder(tmp_path / "listen", uids)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "instances": args.instances, "associations": args.associations,
        "workers": args.workers, "bundle": str(args.bundle),
        "source_kind": "CR chest X-ray, 1024x1024 JPEG baseline, 127 KB",
        "folder_triage": {"images_per_second": this_run["images_per_second"],
                          "seconds": this_run["seconds"], "wall_seconds": round(wall, 2)},
        "listener": listen, "check": check,
        "ratio_listener_to_folder": round(listen["triaged_per_second"]
                                          / this_run["images_per_second"], 2),
        "load_before": load_before, "load_after": load_average(),
        "machine": cpu_facts(), "versions": versions(), "kit": kit_revision()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pacs_load.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "pacs_load.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.out / 'pacs_load.json'} and {args.out / 'pacs_load.md'}")
    lost = check["lost"] or check["duplicated"] or check["sr_missing"]
    return EXIT_FAIL if lost else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
