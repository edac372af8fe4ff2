"""Error types that several rooms of the runtime raise (a leaf: imports nothing of the kit).

Each message is meant for the user: it says what is wrong and what to do.
"""

from __future__ import annotations


class BundleError(RuntimeError):
    """A bundle that is missing, incomplete, tampered with or cannot be run here."""


class DecodeError(ValueError):
    """A file that cannot be turned into an X-ray image; the message is meant for the user."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail
