"""Hook request signing (the "Hook signatures" section of runyard's contract).

Pure functions, no I/O, so the server's verifier and this client can be checked
against the same known answers.

- v1 (what webda's Python primitives send):
  ``X-Job-Hash = hex(HMAC-SHA256(secret, X-Job-Time))``, no ``X-Job-Signature`` header.
- v2 (runyard's own clients, ``X-Job-Signature: v2``):
  ``X-Job-Hash = hex(HMAC-SHA256(secret, time + "\\n" + METHOD + "\\n" + PATH_AND_QUERY
  + "\\n" + hex(SHA256(body))))``.

The secret is encoded as UTF-8 (identical to webda's latin-1 for the ASCII secrets runyard issues).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Dict
from urllib.parse import urlsplit

SIGNATURES = ("v1", "v2")

#: hex(SHA256(b"")): the body digest of a request without a body (GET).
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()


def sign_v1(secret: str, timestamp: str) -> str:
    """v1: the HMAC covers the timestamp only."""
    return hmac.new(secret.encode("utf-8"), timestamp.encode("utf-8"), hashlib.sha256).hexdigest()


def v2_message(timestamp: str, method: str, path_and_query: str, body: bytes) -> bytes:
    """The exact bytes a v2 signature covers."""
    digest = hashlib.sha256(body or b"").hexdigest()
    return "\n".join((timestamp, method.upper(), path_and_query, digest)).encode("utf-8")


def sign_v2(secret: str, timestamp: str, method: str, path_and_query: str, body: bytes = b"") -> str:
    """v2: the HMAC covers time, method, path and query, and the SHA-256 of the body."""
    message = v2_message(timestamp, method, path_and_query, body)
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
) -> Dict[str, str]:
    """The X-Job-* headers for one request. ``target`` is the path and query (v2 only)."""
    if signature == "v1":
        return {"X-Job-Id": job_id, "X-Job-Time": timestamp, "X-Job-Hash": sign_v1(secret, timestamp)}
    if signature == "v2":
        return {
            "X-Job-Id": job_id,
            "X-Job-Time": timestamp,
            "X-Job-Signature": "v2",
            "X-Job-Hash": sign_v2(secret, timestamp, method, target, body),
        }
    raise ValueError(f"unknown signature version {signature!r}: expected one of {', '.join(SIGNATURES)}")
