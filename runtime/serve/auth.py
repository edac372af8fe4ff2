"""Who may call the service: a bearer token, or nobody but this machine.

The token comes from ``--token-file`` or the ``CXR_API_TOKEN`` environment variable. Without one,
the service starts only on a loopback address (it cannot be reached from another machine) and says
so; with one, every ``/v1/`` request must carry ``Authorization: Bearer <token>``, compared in
constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

TOKEN_ENV = "CXR_API_TOKEN"
#: host names that always mean this machine (anything else must be a loopback IP address)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
MIN_TOKEN_CHARS = 16


class AuthError(ValueError):
    """A token or host setting the service must not start with; the message says the fix."""


def is_loopback(host: str) -> bool:
    """True when ``host`` can only be reached from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other host name may resolve to a public address


def load_token(token_file: Path | None = None, environ: dict[str, str] | None = None) -> str | None:
    """The API token: the file's content (stripped) if given, else ``$CXR_API_TOKEN``, else None."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthError(f"--token-file {token_file} cannot be read ({exc}); give a readable "
                            "file holding the token on one line") from exc
        if not token:
            raise AuthError(f"--token-file {token_file} is empty; write the token into it")
    else:
        token = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise AuthError(f"the API token must be at least {MIN_TOKEN_CHARS} characters without "
                        "spaces; make one with `python -c \"import secrets; "
                        "print(secrets.token_urlsafe(32))\"`")
    return token


def check_host(host: str, token: str | None) -> None:
    """Refuse a host reachable from other machines when no token protects it."""
    if token is None and not is_loopback(host):
        raise AuthError(f"refusing to listen on {host} without an API token: anyone who can reach "
                        f"this machine could use it. Set {TOKEN_ENV} or pass --token-file, or "
                        "listen on 127.0.0.1 (this machine only)")


def authorized(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header value grants access (always, when no token is set)."""
    if token is None:
        return True
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))
