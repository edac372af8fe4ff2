"""The Storage SCP: answers C-ECHO, accepts chest X-ray images by C-STORE, spools them.

Accepted storage classes: CR, DX for Presentation and for Processing, and Secondary Capture (how
digitised films and many archives hold chest X-rays; the scope rules judge what they show). Each
is offered in every transfer syntax the runner decodes (:mod:`runtime.imaging.dicom`); any other
SOP class is refused at association (no presentation context), so the sender gets a DICOM
failure, never a silent drop. An instance is answered 0x0000 only once it is fsynced in the
spool (:mod:`runtime.pacs.spool`); a write that fails is answered 0xA700 (out of resources) and an
unusable SOP Instance UID 0xC000 (cannot understand). A calling AE title (or AE title and host)
that is not on the allow-list is rejected at association (A-ASSOCIATE-RJ, "calling AE title not
recognised"). With a certificate and key the listener speaks TLS only.

Nothing about the patient is logged: the console shows the SOP Instance UID and the calling AE.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runtime.pacs.spool import is_uid, write_instance

#: the image storage classes accepted (name -> SOP Class UID)
IMAGE_CLASSES = {
    "Computed Radiography Image Storage": "1.2.840.10008.5.1.4.1.1.1",
    "Digital X-Ray Image Storage - For Presentation": "1.2.840.10008.5.1.4.1.1.1.1",
    "Digital X-Ray Image Storage - For Processing": "1.2.840.10008.5.1.4.1.1.1.1.1",
    "Secondary Capture Image Storage": "1.2.840.10008.5.1.4.1.1.7",
}
#: every transfer syntax runtime.imaging.dicom decodes
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended (12-bit)
    "1.2.840.10008.1.2.4.57",  # JPEG lossless, process 14
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
)
VERIFICATION = "1.2.840.10008.1.1"
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
#: A-ASSOCIATE-RJ: rejected-permanent, by the service user, calling AE title not recognised
REJECT_CALLING_AE = (0x01, 0x01, 0x03)

log = logging.getLogger("runtime.pacs")


class ListenerError(RuntimeError):
    """The listener cannot start (port taken, TLS files unreadable, pynetdicom missing)."""


@dataclass(frozen=True)
class Allowed:
    """One allow-list entry: ``AE`` or ``AE@HOST``."""

    ae_title: str
    host: str = ""

    @classmethod
    def parse(cls, text: str) -> Allowed:
        ae, _, host = text.partition("@")
        if not ae.strip() or len(ae.strip()) > 16:
            raise ValueError(f"--allow {text!r}: an AE title is 1 to 16 characters, e.g. "
                             "PACS or PACS@10.0.0.5")
        return cls(ae.strip(), host.strip())

    def admits(self, ae_title: str, host: str) -> bool:
        return ae_title.strip() == self.ae_title and (not self.host or host == self.host)


@dataclass
class ListenerSettings:
    out: Path
    ae_title: str = "CXRKIT"
    host: str = "0.0.0.0"
    port: int = 11112
    allow: list[Allowed] = field(default_factory=list)  # empty: any calling AE
    tls_cert: Path | None = None
    tls_key: Path | None = None


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context from a certificate and key file (ListenerError naming the file)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ListenerError(f"--tls-cert {cert} / --tls-key {key} cannot be used ({exc}); give a "
                            "PEM certificate and its unencrypted PEM private key") from exc
    return context


def _pynetdicom():
    try:
        import pynetdicom
    except ImportError as exc:
        raise ListenerError("the DICOM listener needs pynetdicom, which is not installed: pip "
                            "install 'cxr-deploy-kit[dicom]'") from exc
    return pynetdicom


class Listener:
    """The Storage SCP; ``on_stored(path)`` is called after each instance is spooled."""

    def __init__(self, settings: ListenerSettings, on_stored: Callable[[Path], None]):
        self.settings = settings
        self.on_stored = on_stored
        self._server = None
        self._lock = threading.Lock()

    def _requested(self, event) -> None:
        allow = self.settings.allow
        if not allow:
            return
        ae_title = event.assoc.requestor.primitive.calling_ae_title
        host = event.assoc.requestor.address
        if not any(entry.admits(ae_title, host) for entry in allow):
            print(f"refused association from {ae_title.strip()}@{host}: not on the allow-list",
                  flush=True)
            event.assoc.acse.send_reject(*REJECT_CALLING_AE)
            event.assoc.kill()  # waits until the A-ASSOCIATE-RJ is out, as pynetdicom's own

    def _stored(self, event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID or "")
        calling = event.assoc.requestor.ae_title.strip()
        if not is_uid(uid):
            print(f"refused an instance from {calling}: its SOP Instance UID is not a valid UID",
                  flush=True)
            return CANNOT_UNDERSTAND
        try:
            path = write_instance(self.settings.out, uid, event.encoded_dataset())
        except OSError as exc:
            print(f"refused {uid} from {calling}: the spool cannot be written "
                  f"({exc.strerror or exc})", flush=True)
            return OUT_OF_RESOURCES
        with self._lock:
            print(f"received {uid} from {calling}", flush=True)
        self.on_stored(path)
        return SUCCESS

    def start(self) -> None:
        """Start serving in background threads (ListenerError when it cannot)."""
        pynetdicom = _pynetdicom()
        from pynetdicom import evt

        for name in ("pynetdicom", "pydicom"):  # their debug output can quote the dataset
            logging.getLogger(name).setLevel(logging.ERROR)
        s = self.settings
        ae = pynetdicom.AE(ae_title=s.ae_title)
        ae.add_supported_context(VERIFICATION)
        for sop_class in IMAGE_CLASSES.values():
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        ae.maximum_pdu_size = 0  # no limit
        context = tls_context(s.tls_cert, s.tls_key) if s.tls_cert and s.tls_key else None
        handlers = [(evt.EVT_REQUESTED, self._requested), (evt.EVT_C_STORE, self._stored)]
        try:
            self._server = ae.start_server((s.host, s.port), block=False, ssl_context=context,
                                           evt_handlers=handlers)
        except OSError as exc:
            raise ListenerError(f"cannot listen on {s.host}:{s.port} ({exc.strerror or exc}); "
                                "choose another --port or stop what uses it") from exc

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
