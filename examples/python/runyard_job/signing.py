"""Hook request signing (the "Hook signatures" section of runyard's contract).

Pure functions, no I/O, so the server's verifier and this client can be checked
against the same known answers.

- v1 (what webda's Python primitives send):
  ``X-Job-Hash = hex(HMAC-SHA256(secret, X-Job-Time))``, no ``X-Job-Signature`` header.
- v2 (runyard's own clients, ``X-Job-Signature: v2``):
  ``X-Job-Hash = hex(HMAC-SHA256(secret, time + "\\n" + METHOD + "\\n" + PATH_AND_QUERY
  + "\\n" + hex(SHA256(body))))``; with an ``X-Job-Nonce`` header (1-64 letters, digits, ``-`` or
  ``_``), ``"\\n" + nonce`` is added at the end of the signed message, so that two requests alike
  signed in the same millisecond (two clients or processes of one job) are not taken for replays
  of each other. ``JobClient`` sends a random one with every v2 request.

The secret is encoded as UTF-8 (identical to webda's latin-1 for the ASCII secrets runyard issues).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Dict, Optional
from urllib.parse import urlsplit

SIGNATURES = ("v1", "v2")

#: hex(SHA256(b"")): the body digest of a request without a body (GET).
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()

#: What ``X-Job-Nonce`` may be: 1-64 ASCII letters, digits, ``-`` or ``_``.
NONCE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_nonce() -> str:
    """A fresh random nonce: 32 lowercase hex characters (128 random bits)."""
    return secrets.token_hex(16)


def sign_v1(secret: str, timestamp: str) -> str:
    """v1: the HMAC covers the timestamp only."""
    return hmac.new(secret.encode("utf-8"), timestamp.encode("utf-8"), hashlib.sha256).hexdigest()


def v2_message(
    timestamp: str, method: str, path_and_query: str, body: bytes, nonce: Optional[str] = None
) -> bytes:
    """The exact bytes a v2 signature covers (with ``"\\n" + nonce`` at the end when there is one)."""
    digest = hashlib.sha256(body or b"").hexdigest()
    parts = [timestamp, method.upper(), path_and_query, digest]
    if nonce is not None:
        if not NONCE_RE.fullmatch(nonce):
            raise ValueError("a nonce is 1-64 ASCII letters, digits, '-' or '_'")
        parts.append(nonce)
    return "\n".join(parts).encode("utf-8")


def sign_v2(
    secret: str, timestamp: str, method: str, path_and_query: str, body: bytes = b"", nonce: Optional[str] = None
) -> str:
    """v2: the HMAC covers time, method, path and query, the SHA-256 of the body, and the nonce
    sent as ``X-Job-Nonce`` if any."""
    message = v2_message(timestamp, method, path_and_query, body, nonce)
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def path_and_query(url: str) -> str:
    """The request target as the server sees it: the URL's path plus ``?query`` if any.

    ``http://h:7070/async/status?x=1`` -> ``/async/status?x=1``. No fragment, never empty.
    """
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return target


def job_headers(
    job_id: str,
    secret: str,
    timestamp: str,
    signature: str = "v2",
    method: str = "GET",
    target: str = "/",
    body: bytes = b"",
    nonce: Optional[str] = None,
) -> Dict[str, str]:
    """The X-Job-* headers for one request. ``target`` is the path and query, ``nonce`` the
    ``X-Job-Nonce`` to send and sign (v2 only; a v1 signature cannot cover it)."""
    if signature == "v1":
        if nonce is not None:
            raise ValueError("a nonce goes with v2 signatures only")
        return {"X-Job-Id": job_id, "X-Job-Time": timestamp, "X-Job-Hash": sign_v1(secret, timestamp)}
    if signature == "v2":
        headers = {
            "X-Job-Id": job_id,
            "X-Job-Time": timestamp,
            "X-Job-Signature": "v2",
            "X-Job-Hash": sign_v2(secret, timestamp, method, target, body, nonce),
        }
        if nonce is not None:
            headers["X-Job-Nonce"] = nonce
        return headers
    raise ValueError(f"unknown signature version {signature!r}: expected one of {', '.join(SIGNATURES)}")
