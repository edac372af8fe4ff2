"""Where the SRs go: a DICOM C-STORE SCP (``--send-to AE@HOST:PORT``) or a DICOMweb STOW-RS
endpoint (``--stow URL``). Each sends a batch of SR files over one connection and says, per
file, delivered or why not."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: C-STORE statuses that mean stored (success and the warnings: coercion, elements discarded)
STORED = {0x0000, 0xB000, 0xB006, 0xB007}
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SR_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


class Unreachable(RuntimeError):
    """The destination cannot be reached at all (the whole batch waits for the next try)."""


class Destination(Protocol):
    name: str  # a file-name-safe key (the outbox's folder)
    shown: str  # how the console and the status show it

    def send(self, files: list[Path]) -> dict[Path, str]:
        """Send ``files`` in order; returns {file: "" if delivered else why not}. Raises
        Unreachable when nothing could be sent (connection refused, association rejected)."""
        ...


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


@dataclass
class CStore:
    """A C-STORE SCP, e.g. the PACS: ``AE@HOST:PORT``; we call it as ``calling_ae``."""

    ae_title: str
    host: str
    port: int
    calling_ae: str = "CXRKIT"

    @classmethod
    def parse(cls, text: str, calling_ae: str) -> CStore:
        match = re.fullmatch(r"([^@]{1,16})@(.+):([0-9]{1,5})", text.strip())
        if not match or not 0 < int(match.group(3)) < 65536:
            raise ValueError(f"--send-to {text!r} is not AE@HOST:PORT, e.g. PACS@10.0.0.5:104")
        return cls(match.group(1).strip(), match.group(2), int(match.group(3)), calling_ae)

    @property
    def name(self) -> str:
        return _safe(f"cstore-{self.ae_title}@{self.host}-{self.port}")

    @property
    def shown(self) -> str:
        return f"C-STORE {self.ae_title}@{self.host}:{self.port}"

    def send(self, files: list[Path]) -> dict[Path, str]:
        import pydicom
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        ae.add_requested_context(COMPREHENSIVE_SR, list(SR_SYNTAXES))
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title)
        if not assoc.is_established:
            why = "association rejected" if assoc.is_rejected else \
                "association aborted" if assoc.is_aborted else "no answer (connection refused?)"
            raise Unreachable(f"{self.shown}: {why}")
        answers: dict[Path, str] = {}
        try:
            for path in files:
                try:
                    status = assoc.send_c_store(pydicom.dcmread(path))
                except (OSError, ValueError, RuntimeError) as exc:
                    answers[path] = f"not sent ({exc})"
                    continue
                code = getattr(status, "Status", None)
                if code in STORED:
                    answers[path] = ""
                elif code is None:
                    answers[path] = "no answer (connection lost)"
                    break
                else:
                    answers[path] = f"refused with DICOM status 0x{code:04X}"
        finally:
            if assoc.is_established:
                assoc.release()
        return answers


@dataclass
class Stow:
    """A DICOMweb STOW-RS endpoint (the service root, e.g. http://pacs/dicom-web)."""

    url: str

    @property
    def name(self) -> str:
        return "stow-" + hashlib.sha256(self.url.encode()).hexdigest()[:12]

    @property
    def shown(self) -> str:
        return f"STOW-RS {re.sub(r'//[^/@]*@', '//', self.url)}"  # never show credentials

    def send(self, files: list[Path]) -> dict[Path, str]:
        import pydicom
        import requests
        from dicomweb_client.api import DICOMwebClient

        client = DICOMwebClient(url=self.url)
        # its own retry covers every exception (30 s on a refused connection): the outbox's
        # back-off retries instead, without holding the other destinations
        client.set_http_retry_params(retry=False)
        answers: dict[Path, str] = {}
        for path in files:
            try:
                client.store_instances([pydicom.dcmread(path)])
                answers[path] = ""
            except requests.ConnectionError as exc:
                if not answers:
                    raise Unreachable(f"{self.shown}: connection failed") from exc
                answers[path] = "connection failed"
                break
            except requests.HTTPError as exc:
                code = exc.response.status_code if exc.response is not None else "?"
                answers[path] = f"refused with HTTP {code}"
            except (OSError, ValueError) as exc:
                answers[path] = f"not sent ({exc})"
        return answers
