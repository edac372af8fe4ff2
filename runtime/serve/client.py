"""A small client for the service, and its launcher as a child process (tests, the load test).

Uses only the standard library (``http.client``), so callers need no HTTP client package.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def get_json(host: str, port: int, path: str, token: str | None = None,
             timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of ``GET path``."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def multipart(data: bytes, filename: str = "image", field: str = "file",
              media_type: str = "application/octet-stream") -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart form holding one file."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: {media_type}\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def post_image(conn: http.client.HTTPConnection, data: bytes, token: str | None = None,
               filename: str | None = None,
               media_type: str = "application/octet-stream") -> tuple[int, dict[str, Any]]:
    """``POST /v1/triage`` on an open connection (kept alive): the raw body, or a multipart form
    when ``filename`` is given; returns (status, JSON body)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if filename is not None:
        data, headers["Content-Type"] = multipart(data, filename, media_type=media_type)
    else:
        headers["Content-Type"] = media_type
    conn.request("POST", "/v1/triage", body=data, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}")


@dataclass
class Service:
    """A running service process."""

    process: subprocess.Popen
    host: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """Everything the service wrote to stdout/stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (uvicorn shuts down gracefully), then kill; the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


def start_service(bundle: str | os.PathLike, args: Sequence[str] = (), host: str = LOOPBACK,
                  port: int | None = None, env: dict[str, str] | None = None,
                  startup_timeout: float = 120.0, cwd: str | os.PathLike | None = None) -> Service:
    """``python -m runtime serve --bundle BUNDLE --host HOST --port PORT ARGS`` in a child process,
    returned once ``/health`` answers; raises RuntimeError (with the service's output) otherwise."""
    port = port or free_port(host)
    log_file = tempfile.NamedTemporaryFile(prefix="cxr-serve-", suffix=".log", delete=False)
    command = [sys.executable, "-m", "runtime", "serve", "--bundle", str(bundle), "--host", host,
               "--port", str(port), *args]
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})}, cwd=cwd)
    log_file.close()
    service = Service(process, host, port, Path(log_file.name))
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with status {process.returncode} before "
                               f"answering:\n{service.log()[-3000:]}")
        try:
            if get_json(host, port, "/health", timeout=2.0)[0] == 200:
                return service
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.2)
    service.stop()
    raise RuntimeError(f"the service did not answer /health within {startup_timeout:.0f} s:\n"
                       f"{service.log()[-3000:]}")
