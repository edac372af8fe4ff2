"""Load test of ``python -m runtime serve`` on the loopback address, beside single-process triage.

In one run, on the same real X-rays (``cxr_samples``, full-size JPEGs) and the same bundle:

1. ``python -m runtime triage`` over the files (fresh process): its images/s, and its rows, the
   reference answers every service answer is compared with;
2. the service started the way users start it (child process, bearer token, default batching),
   warmed up with one level's worth of requests (at least every file once) at the highest
   concurrency (batch sizes, allocator arenas);
3. at each concurrency (default 1, 8, 32) closed-loop clients, one kept-alive connection each,
   send the files round-robin until ``--requests`` answers or ``--seconds`` have passed:
   requests/s, latency p50/p99 (client side), failed requests, mean batch size (server counters),
   every probability checked against the triage row of its file;
4. the server's resident memory (psutil) after the warm-up, after each level and after each
   half of the burst, sampled every 0.25 s meanwhile; "flat" means it grows by at most
   max(16 MiB, 5 %) of the value after the warm-up over the levels, and over the burst's second
   half (the first may allocate what the error paths need once);
5. a burst of malformed uploads (X-rays cut short, corrupt data, text, random bytes, empty and
   oversized bodies, forms without a file, no token): each must get a 4xx, none a 5xx or a broken
   connection; then real X-rays again, whose answers must still equal the triage rows.

Writes ``OUT/load_test.json`` and ``OUT/load_test.md``; ``python -m benchmarks readme`` puts the
figures in the README. Everything is bounded: requests and seconds per level, burst size.
"""

from __future__ import annotations

import csv
import datetime as dt
import http.client
import itertools
import json
import math
import os
import secrets
import shutil
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks import e2e, machine
from benchmarks.report import _atomic_write, clean
from benchmarks.worker import REPO
from runtime.running.results import row_probabilities
from runtime.serve.client import get_json, post_image, start_service

JSON_NAME, MD_NAME = "load_test.json", "load_test.md"
PROBABILITY_TOLERANCE = 1e-6  # results.csv writes 6 decimals
MIN_GROWTH_MIB, MAX_GROWTH_FRACTION = 16.0, 0.05


@dataclass
class Options:
    bundle: Path
    images: Path
    out: Path
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])
    requests: int = 700
    seconds: float = 60.0
    malformed: int = 200
    limit: int | None = None  # use only the first N images
    workers: int = e2e.default_workers()
    max_batch: int = 32
    max_wait_ms: float = 5.0
    timeout: float = 900.0
    command: str = ""


@dataclass
class Sent:
    """One request's outcome."""

    index: int  # image index (-1 for malformed uploads)
    status: int | None  # None: no HTTP answer (connection error)
    seconds: float
    body: dict


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class RssSampler:
    """Samples a process's resident memory every ``period`` seconds in a thread."""

    def __init__(self, pid: int, period: float = 0.25):
        import psutil

        self.process = psutil.Process(pid)
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def now_mib(self) -> float:
        return self.process.memory_info().rss / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.samples.append(self.now_mib())
            except Exception:  # the process ended
                return

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def drive(host: str, port: int, count: int, seconds: float, concurrency: int,
          make_request: Callable[[http.client.HTTPConnection, int], tuple[int, dict]]
          ) -> tuple[list[Sent], float]:
    """Closed loop: ``concurrency`` threads, one kept-alive connection each, send requests
    0..count-1 (``make_request(conn, i)``) until all are sent or ``seconds`` have passed.
    Returns the outcomes and the wall time."""
    numbers, sent = itertools.count(), []
    started = time.perf_counter()
    deadline = started + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        try:
            while time.perf_counter() < deadline:
                i = next(numbers)
                if i >= count:
                    return
                t0 = time.perf_counter()
                try:
                    status, body = make_request(conn, i)
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    status, body = None, {"error": f"{type(exc).__name__}: {exc}"}
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=120)
                sent.append(Sent(i, status, time.perf_counter() - t0, body))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent, time.perf_counter() - started


def _checked(sent: list[Sent], reference: list[dict], n_images: int) -> dict:
    """Compare every answered probability (the answer's and each label's) with the triage row of
    the same file."""
    diffs, flag_mismatch = [], 0
    for s in sent:
        if s.status != 200:
            continue
        row = reference[s.index % n_images]
        labels = row_probabilities(row)
        answered = s.body.get("probabilities") or {}
        diffs.append(max([abs(s.body["probability"] - float(row["probability"])),
                          *(abs(float(answered[k]) - labels[k]) for k in labels.keys()
                            & answered.keys())]))
        flag_mismatch += s.body["flagged"] != bool(int(row["flagged"]))
    return {"compared": len(diffs), "max_abs_diff": max(diffs, default=None),
            "flagged_mismatches": flag_mismatch,
            "agree": bool(diffs) and max(diffs) <= PROBABILITY_TOLERANCE and not flag_mismatch}


def malformed_uploads(images: list[bytes], chest_dicom: bytes | None) -> list[tuple[str, dict]]:
    """The kinds of bad request the burst cycles through: (name, request parts), mostly made
    from real X-rays."""
    import cv2

    xray = images[0]
    png = cv2.imencode(".png", cv2.imdecode(np.frombuffer(xray, np.uint8),
                                            cv2.IMREAD_GRAYSCALE))[1].tobytes()
    corrupt = bytearray(xray)
    middle = len(corrupt) // 2
    corrupt[middle:middle + 2048] = secrets.token_bytes(2048)
    kinds = [
        ("jpeg cut short", {"body": xray[: len(xray) * 2 // 5]}),
        ("jpeg with corrupt data", {"body": bytes(corrupt)}),
        ("png cut short", {"body": png[: len(png) // 2]}),
        ("random bytes", {"body": secrets.token_bytes(4096)}),
        ("text", {"body": b"name,date of birth\nnobody,2020-01-01\n"}),
        ("empty body", {"body": b""}),
        ("multipart without a file", {"body": b"--b\r\nContent-Disposition: form-data; "
                                              b"name=\"note\"\r\n\r\nhi\r\n--b--\r\n",
                                      "content_type": "multipart/form-data; boundary=b"}),
        ("broken multipart", {"body": b"--b\r\nnot a header\r\n\r\n",
                              "content_type": "multipart/form-data; boundary=b"}),
        ("declared over the size limit", {"declared": 2**40}),
        ("no token", {"body": xray, "token": None}),
    ]
    if chest_dicom:
        kinds.append(("dicom cut short", {"body": chest_dicom[: len(chest_dicom) // 3],
                                          "content_type": "application/dicom"}))
    return kinds


def _send_malformed(conn: http.client.HTTPConnection, parts: dict, token: str) -> tuple[int, dict]:
    headers = {"Content-Type": parts.get("content_type", "application/octet-stream")}
    if parts.get("token", token):
        headers["Authorization"] = f"Bearer {token}"
    if "declared" in parts:  # headers only: the service must refuse before reading a body
        conn.putrequest("POST", "/v1/triage")
        for key, value in {**headers, "Content-Length": str(parts["declared"])}.items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        conn.close()  # the connection still owes the declared body: never reuse it
        return response.status, json.loads(body or b"{}")
    conn.request("POST", "/v1/triage", body=parts["body"], headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def _link_images(files: list[Path], into: Path) -> Path:
    """A folder of links ``0000.jpeg``... so results rows map to image indices."""
    into.mkdir(parents=True)
    for i, path in enumerate(files):
        (into / f"{i:04d}{path.suffix.lower()}").symlink_to(path.resolve())
    return into


def _level_summary(concurrency: int, sent: list[Sent], wall: float, stats_before: dict,
                   stats_after: dict, check: dict, rss_after: float) -> dict:
    ok = [s for s in sent if s.status == 200]
    latencies = [1000 * s.seconds for s in ok]
    batches = stats_after["batches"] - stats_before["batches"]
    images = stats_after["images"] - stats_before["images"]
    return {"concurrency": concurrency, "requests": len(sent), "ok": len(ok),
            "failed": len(sent) - len(ok),
            "failures": sorted({f"{s.status}: {s.body.get('error', '')}"[:200]
                                for s in sent if s.status != 200})[:5],
            "seconds": round(wall, 3), "requests_per_second": round(len(ok) / wall, 2),
            "latency_ms": {"p50": _percentile(latencies, 50), "p99": _percentile(latencies, 99),
                           "mean": float(np.mean(latencies)) if latencies else None},
            "mean_batch": round(images / batches, 2) if batches else None,
            "rss_after_mib": round(rss_after, 1), "correctness": check}


def run(options: Options, say: Callable[[str], None]) -> dict:
    """The whole load test; returns the report (see the module docstring)."""
    from runtime.contract.manifest import load_manifest

    files = e2e.image_files(options.images)[: options.limit or None]
    if not files:
        raise ValueError(f"no images under {options.images}")
    images = [path.read_bytes() for path in files]
    manifest = load_manifest(options.bundle)
    work = Path(tempfile.mkdtemp(prefix="cxr-load-test-"))
    report: dict = {
        "kind": "serve-load-test", "command": options.command,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine.describe(), "load_average_at_start": machine.load_average()},
        "images": {"folder": str(options.images), "n": len(files),
                   "mean_kib": round(sum(map(len, images)) / len(images) / 1024, 1)},
        "bundle": {"path": str(options.bundle), "target": manifest.target,
                   "artifact": manifest.default_artifact},
        "settings": {"concurrency": options.concurrency, "requests_per_level": options.requests,
                     "seconds_per_level": options.seconds, "malformed": options.malformed,
                     "workers": options.workers, "max_batch": options.max_batch,
                     "max_wait_ms": options.max_wait_ms},
    }
    try:
        say(f"single-process triage of {len(files)} images ...")
        folder = _link_images(files, work / "images")
        triage = e2e.triage_rate(folder, options.bundle, manifest.default_artifact,
                                 options.workers, len(files), options.timeout,
                                 keep=work / "triage")
        report["triage"] = triage
        if triage["status"] != "ok":
            raise RuntimeError(f"single-process triage failed: {triage['error']}")
        with open(work / "triage" / "results" / "results.csv", newline="",
                  encoding="utf-8") as f:
            rows = {row["path"]: row for row in csv.DictReader(f)}
        reference = [rows[f"{i:04d}{p.suffix.lower()}"] for i, p in enumerate(files)]
        report["service"] = _serve(options, images, reference, say)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["machine"]["load_average_at_end"] = machine.load_average()
    report["verdict"] = verdict(report)
    return report


def _serve(options: Options, images: list[bytes], reference: list[dict],
           say: Callable[[str], None]) -> dict:
    token = secrets.token_urlsafe(32)
    args = ["--workers", str(options.workers), "--max-batch", str(options.max_batch),
            "--max-wait-ms", str(options.max_wait_ms)]
    n = len(images)
    out: dict = {"levels": []}
    say("starting the service ...")
    started = time.perf_counter()
    env = {"CXR_API_TOKEN": token, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
    with start_service(options.bundle, args, env=env, cwd=REPO) as service:
        out["startup_s"] = round(time.perf_counter() - started, 2)
        host, port = service.host, service.port

        def stats() -> dict:
            return get_json(host, port, "/v1/model", token)[1]["stats"]

        def triage_one(conn, i):
            return post_image(conn, images[i % n], token, media_type="image/jpeg")

        top = max(options.concurrency)
        # warm-up: one level's worth at the highest concurrency (batch sizes, allocator arenas)
        warmup, _ = drive(host, port, max(options.requests, n), options.seconds, top,
                          triage_one)
        out["warmup_requests"] = len(warmup)
        with RssSampler(service.pid) as rss:
            out["rss_after_warmup_mib"] = round(rss.now_mib(), 1)
            for concurrency in options.concurrency:
                say(f"concurrency {concurrency}: up to {options.requests} requests or "
                    f"{options.seconds:g} s ...")
                before = stats()
                sent, wall = drive(host, port, options.requests, options.seconds, concurrency,
                                   triage_one)
                level = _level_summary(concurrency, sent, wall, before, stats(),
                                       _checked(sent, reference, n), rss.now_mib())
                out["levels"].append(level)
                say(f"  {level['requests_per_second']:.1f} req/s, p50 "
                    f"{level['latency_ms']['p50'] or 0:.1f} ms, p99 "
                    f"{level['latency_ms']['p99'] or 0:.1f} ms, {level['failed']} failed, "
                    f"mean batch {level['mean_batch']}")
            out["rss_after_levels_mib"] = round(rss.now_mib(), 1)
            out["burst"] = _burst(options, images, reference, token, service, triage_one, rss)
            say(f"malformed burst: {out['burst']['sent']} sent, by status "
                f"{out['burst']['by_status']}; afterwards correct: "
                f"{out['burst']['after']['correctness']['agree']}")
            out["rss_end_mib"] = round(rss.now_mib(), 1)
            samples = rss.samples
        out["rss_peak_mib"] = round(max(samples, default=out["rss_end_mib"]), 1)
        out["rss_samples_mib"] = [round(x, 1) for x in samples]
        final = get_json(host, port, "/v1/model", token)[1]
        out["server_stats"] = final["stats"]
        out["bundle"] = {k: final[k] for k in ("target", "artifact", "sha256", "engine",
                                               "providers", "inference_precision")}
        out["exit_status"] = service.stop()  # uvicorn re-raises SIGTERM after shutting down
        log = service.log()
        out["log_lines"] = log.count("\n")
        out["clean_shutdown"] = "Application shutdown complete" in log
    growth = out["rss_after_levels_mib"] - out["rss_after_warmup_mib"]
    halves = out["burst"]["rss_after_halves_mib"]
    burst_growth = halves[1] - halves[0]
    allowed = max(MIN_GROWTH_MIB, MAX_GROWTH_FRACTION * out["rss_after_warmup_mib"])
    out["memory"] = {"growth_mib": round(growth, 1), "burst_second_half_growth_mib":
                     round(burst_growth, 1), "allowed_mib": round(allowed, 1),
                     "flat": growth <= allowed and burst_growth <= allowed}
    return out


def _burst(options: Options, images: list[bytes], reference: list[dict], token: str, service,
           triage_one, rss: RssSampler) -> dict:
    """The malformed uploads in two halves (RSS after each: the first half may allocate what the
    error paths need, the second must not grow), then real X-rays again."""
    host, port = service.host, service.port
    chest = None
    dicom_dir = options.images.parent / "dicom"
    candidates = sorted(dicom_dir.glob("*.dcm")) if dicom_dir.is_dir() else []
    if candidates:
        chest = candidates[0].read_bytes()
    kinds = malformed_uploads(images, chest)

    def bad(conn, i):
        return _send_malformed(conn, kinds[i % len(kinds)][1], token)

    half = options.malformed // 2
    first, wall_1 = drive(host, port, half, options.seconds, 8, bad)
    rss_halves = [rss.now_mib()]
    second, wall_2 = drive(host, port, options.malformed - half, options.seconds, 8,
                           lambda conn, i: bad(conn, i + half))
    rss_halves.append(rss.now_mib())
    sent, wall = first + [Sent(s.index + half, s.status, s.seconds, s.body) for s in second], \
        wall_1 + wall_2
    by_status: dict[str, int] = {}
    by_kind: dict[str, list[int]] = {}
    for s in sent:
        by_status[str(s.status)] = by_status.get(str(s.status), 0) + 1
        by_kind.setdefault(kinds[s.index % len(kinds)][0], []).append(s.status)
    failed = [s for s in sent if s.status is None or not 400 <= s.status < 500]
    again, _ = drive(host, port, min(len(images), 64), options.seconds, 8, triage_one)
    health = None
    try:
        health = get_json(host, port, "/health")[0]
    except OSError:
        pass
    return {"sent": len(sent), "seconds": round(wall, 3), "by_status": by_status,
            "rss_after_halves_mib": [round(x, 1) for x in rss_halves],
            "kinds": {k: sorted(set(v), key=str) for k, v in by_kind.items()},
            "failed": len(failed), "running": service.process.poll() is None,
            "after": {"requests": len(again), "ok": sum(s.status == 200 for s in again),
                      "health": health, "correctness": _checked(again, reference,
                                                                len(images))}}


def verdict(report: dict) -> dict:
    """Whether the run met every condition (each named), for the exit status and the report."""
    service = report.get("service") or {}
    levels = service.get("levels") or []
    burst = service.get("burst") or {}
    after = burst.get("after") or {}
    checks = {
        "zero failed requests": bool(levels) and all(lv["failed"] == 0 for lv in levels),
        "answers equal the triage rows": bool(levels) and all(
            lv["correctness"]["agree"] for lv in levels),
        "memory flat": bool((service.get("memory") or {}).get("flat")),
        "malformed uploads all got a 4xx": bool(burst) and burst.get("failed") == 0,
        "correct after the burst": bool(after) and after.get("ok") == after.get("requests")
        and (after.get("correctness") or {}).get("agree", False) and after.get("health") == 200,
    }
    return {"passed": all(checks.values()), "checks": checks}


# --------------------------------------------------------------------------------------------
# report files


def _ms(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.1f} ms"


def summary_text(report: dict) -> str:
    """The Markdown summary (also the README block): table + memory, burst and triage lines."""
    service, triage = report["service"], report["triage"]
    cpu = report["machine"]["cpu"]
    settings = report["settings"]
    load = report["machine"].get("load_average_at_start")
    lines = [
        f"Measured by `{report['command']}` on {report['created_at'][:10]} ({cpu['model']}, "
        f"{cpu['usable_cpus']} usable cores, shared with other work: load average "
        f"{load[0] if load else '?'} at the start), service and clients on the same machine "
        f"over the loopback address; {report['images']['n']} full-size Kermany JPEGs (mean "
        f"{report['images']['mean_kib']:,.0f} KiB) sent round-robin; bundle "
        f"`{service['bundle']['target']}` / `{service['bundle']['artifact']}`; "
        f"{settings['workers']} decode threads, batches of up to {settings['max_batch']}, "
        f"wait {settings['max_wait_ms']:g} ms:",
        "",
        "| concurrency | requests | failed | requests/s | p50 latency | p99 latency | mean batch "
        "| server RSS after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for lv in service["levels"]:
        lines.append(f"| {lv['concurrency']} | {lv['requests']} | {lv['failed']} | "
                     f"{lv['requests_per_second']:.1f} | {_ms(lv['latency_ms']['p50'])} | "
                     f"{_ms(lv['latency_ms']['p99'])} | {lv['mean_batch'] or '–'} | "
                     f"{lv['rss_after_mib']:.0f} MiB |")
    memory, burst = service["memory"], service["burst"]
    statuses = ", ".join(f"{n}× {s}" for s, n in sorted(burst["by_status"].items()))
    lines += [
        "",
        f"Single-process `python -m runtime triage` over the same files in the same run: "
        f"**{triage['images_per_second']:.1f} images/s** ({triage['workers']} decode threads, "
        f"batch {triage['batch']}). Every service answer equals that run's row for the file "
        f"(max |difference| {_diff(service['levels'])}). Server memory "
        f"{service['rss_after_warmup_mib']:.0f} MiB after the warm-up, "
        f"{service['rss_after_levels_mib']:.0f} MiB after the last level "
        f"({memory['growth_mib']:+.1f} MiB), {burst['rss_after_halves_mib'][0]:.0f} and "
        f"{burst['rss_after_halves_mib'][1]:.0f} MiB after each half of the burst "
        f"({memory['burst_second_half_growth_mib']:+.1f} MiB), peak "
        f"{service['rss_peak_mib']:.0f} MiB: {'flat' if memory['flat'] else 'NOT flat'} (at "
        f"most {memory['allowed_mib']:.0f} MiB growth allowed). A burst of {burst['sent']} "
        f"malformed uploads "
        f"({len(burst['kinds'])} kinds) got {statuses}; afterwards "
        f"{burst['after']['ok']}/{burst['after']['requests']} real X-rays answered, "
        f"{'the same as the triage rows' if burst['after']['correctness']['agree'] else 'DIFFERENTLY'}.",
    ]
    passed = report["verdict"]["passed"]
    failed = [k for k, ok in report["verdict"]["checks"].items() if not ok]
    if not passed:
        lines.append(f"**Failed checks: {', '.join(failed)}.**")
    return "\n".join(_wrap(line) if not line.startswith("|") else line for line in lines) + "\n"


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100, break_on_hyphens=False, break_long_words=False)


def _diff(levels: list[dict]) -> str:
    diffs = [lv["correctness"]["max_abs_diff"] for lv in levels
             if lv["correctness"]["max_abs_diff"] is not None]
    return f"{max(diffs):.1e}" if diffs else "–"


def write(report: dict, out: Path) -> list[Path]:
    """``OUT/load_test.json`` and ``OUT/load_test.md``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / JSON_NAME, out / MD_NAME
    _atomic_write(json_path, json.dumps(clean(report), indent=2, allow_nan=False) + "\n")
    checks = "\n".join(f"- {'ok' if ok else 'FAILED'}: {name}"
                       for name, ok in report["verdict"]["checks"].items())
    _atomic_write(md_path, "# Load test: `python -m runtime serve`\n\n" + summary_text(report)
                  + "\n## Checks\n\n" + checks + "\n")
    return [json_path, md_path]
