"""The FastAPI application: ``POST /v1/triage``, ``GET /v1/model``, ``GET /health``.

``/v1/triage`` takes one image (JPEG, PNG, BMP, TIFF, DICOM) as the raw request body or as a file
in a multipart form and answers with the verdict a ``results.csv`` row would hold (probability,
flagged, prediction, threshold in force, scope and its reason), the bundle and artifact that
decided it, the batch it ran in and the time spent. A file that cannot be triaged gets 422 with the
row's plain-words error; a body over the size limit 413; a missing image 400; a missing or wrong
token 401. The access log holds method, path, status, latency and request size only: never image
bytes, upload file names or DICOM fields.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, AsyncIterator

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from runtime.bundle.load import Bundle
from runtime.imaging.limits import DECODE_TIMEOUT_S, DEFAULT_MEMORY_BUDGET
from runtime.serve.auth import authorized
from runtime.serve.batching import MicroBatcher
from runtime.serve.scoring import Scorer, spool_suffix

log = logging.getLogger("runtime.serve")
MIB = 2**20


@dataclass(frozen=True)
class ServeSettings:
    """How the service batches, decodes and limits requests."""

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_upload_bytes: int = 64 * MIB
    workers: int = 2
    decode_timeout_s: float = DECODE_TIMEOUT_S
    decode_memory_bytes: int = DEFAULT_MEMORY_BUDGET


@dataclass
class RequestStats:
    """Responses by status class, counted by the access-log middleware."""

    requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def count(self, status: int) -> None:
        self.requests += 1
        self.by_status[str(status)] = self.by_status.get(str(status), 0) + 1


class AccessLog:
    """Pure ASGI middleware: one log line per request (method, path, status, ms, bytes in)."""

    def __init__(self, app, stats: RequestStats):
        self.app, self.stats = app, stats

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, received, status = time.perf_counter(), 0, 500

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def status_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, counting_receive, status_send)
        finally:
            self.stats.count(status)
            log.info("%s %s %d %.1f ms %d B", scope["method"], scope["path"], status,
                     1000 * (time.perf_counter() - started), received)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"status": "error", "error": message, **extra}, status_code=status,
                        headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    too_large = HTTPException(413, f"request body larger than the {limit / MIB:g} MiB limit; "
                                   "send one image per request (the limit is --max-upload-mib)")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_large
        except ValueError:
            raise HTTPException(400, "invalid Content-Length header") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def image_from(request: Request, body: bytes) -> tuple[bytes, str]:
    """(image bytes, spool suffix) from a raw body or the file field of a multipart form."""
    media_type = request.headers.get("content-type", "")
    if not media_type.lower().startswith("multipart/form-data"):
        if not body:
            raise HTTPException(400, "no image in the request: send the image file as the request "
                                     "body or as a multipart file field named 'file'")
        return body, spool_suffix(None, media_type)

    async def replay():  # the body is already read (and size-checked): parse it from memory
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except MultiPartException as exc:
        raise HTTPException(400, f"the multipart form cannot be read ({exc.message}); send one "
                                 "image as a file field named 'file'") from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise HTTPException(400, "no file in the multipart form: send the image as a file "
                                     "field named 'file'")
        upload = form.get("file") if isinstance(form.get("file"), UploadFile) else files[0]
        return await upload.read(), spool_suffix(upload.filename, upload.content_type)
    finally:
        await form.close()


def identity(bundle: Bundle) -> dict[str, Any]:
    """Which bundle and artifact decide the answers (no server paths)."""
    d = bundle.describe()
    return {"target": d["target"], "model": bundle.manifest.model.name, "artifact": d["artifact"],
            "sha256": d["sha256"], "format": d["format"], "precision": d["precision"],
            "engine": d["engine"], "providers": d["active"],
            "inference_precision": d["inference_precision"], "device": d["device"]}


def create_app(bundle: Bundle, token: str | None, settings: ServeSettings = ServeSettings(),
               device_check: dict | None = None) -> FastAPI:
    """The service for a loaded, self-checked ``bundle``; ``token`` None: no authentication."""
    scorer = Scorer(bundle, settings.workers, settings.decode_timeout_s,
                    settings.decode_memory_bytes)
    batcher = MicroBatcher(scorer.score, settings.max_batch, settings.max_wait_ms / 1000.0)
    stats = RequestStats()
    who = identity(bundle)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            scorer.close()

    app = FastAPI(title="Chest X-ray triage", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.add_middleware(AccessLog, stats=stats)
    app.state.batcher, app.state.scorer, app.state.stats = batcher, scorer, stats

    @app.exception_handler(StarletteHTTPException)  # ours, and routing's 404/405
    async def plain_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    def check_token(request: Request) -> None:
        if not authorized(request.headers.get("authorization"), token):
            raise HTTPException(401, "missing or wrong API token: send the header "
                                     "'Authorization: Bearer <token>'")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model(request: Request) -> dict[str, Any]:
        check_token(request)
        manifest = bundle.manifest
        described = bundle.describe()
        return {"status": "ok", **who, "threshold": bundle.threshold,
                "build_threshold": described["build_threshold"],
                "site_calibration": described.get("site"),
                "classes": list(bundle.classes), "positive_class": bundle.positive_class,
                "preprocessing": bundle.preprocessing.as_dict(),
                "population": asdict(bundle.population),
                "metrics": asdict(bundle.artifact.metrics) if bundle.artifact.metrics else None,
                "schema_version": manifest.schema_version, "notes": list(bundle.notes),
                "device_check": {k: (device_check or {}).get(k) for k in
                                 ("passed", "n", "agreement", "max_abs_diff", "providers",
                                  "cached", "checked_at")} if device_check else None,
                "service": {**asdict(settings), "authentication":
                            "bearer token" if token else "none (loopback only)"},
                "stats": {**batcher.stats.as_dict(), "requests": stats.requests,
                          "responses": dict(sorted(stats.by_status.items()))}}

    @app.post("/v1/triage")
    async def triage(request: Request) -> JSONResponse:
        check_token(request)
        started = time.perf_counter()
        body = await read_body(request, settings.max_upload_bytes)
        data, suffix = await image_from(request, body)
        loaded = await scorer.decode_async(data, suffix)
        del data, body
        if loaded.error:
            return _error(422, loaded.error, bundle=who,
                          latency_ms=round(1000 * (time.perf_counter() - started), 2))
        try:
            batched = await batcher.submit(loaded)
        except Exception as exc:
            log.error("the model failed on a batch: %s: %s", type(exc).__name__, exc)
            return _error(500, f"the model failed on this request's batch ({type(exc).__name__}); "
                               "the service log has the detail", bundle=who)
        verdict = batched.result
        if not verdict.ok:  # this request only; the others of its batch were scored
            return _error(422, verdict.error, bundle=who,
                          latency_ms=round(1000 * (time.perf_counter() - started), 2))
        return JSONResponse({
            "status": "ok", "prediction": verdict.prediction,
            "probability": verdict.probability, "flagged": verdict.flagged,
            "threshold": verdict.threshold, "finding": verdict.finding,
            "probabilities": verdict.by_label(bundle.classes), "thresholds": bundle.thresholds,
            "scope": verdict.scope.label,
            "scope_reason": verdict.scope.reason, "width": loaded.width, "height": loaded.height,
            "decode": loaded.decode, "bundle": who, "batch_size": batched.batch_size,
            "latency_ms": {"total": round(1000 * (time.perf_counter() - started), 2),
                           "decode": round(1000 * loaded.seconds, 2),
                           "queued": round(1000 * batched.queued_s, 2),
                           "model": round(1000 * batched.run_s, 2)}})

    return app
