"""Verifying runyard's signed webhooks (docs/notifications.md): the stdlib only.

    from runyard_job.webhook import verify
    ok = verify(key, request.headers["Runyard-Signature"], request.body)

``key`` is what ``POST /async/notify/keys {"url": ...}`` returned for the endpoint; ``body`` is the
raw request body (bytes), exactly as received.
"""

import hashlib
import hmac
import time


def verify(secret, header, body, tolerance=300, now=None):
    """True when ``header`` (``t=<unix seconds>,v1=<hex>[,v1=<hex>]``) signs ``body`` with
    ``secret`` and ``t`` is within ``tolerance`` seconds of now."""
    try:
        pairs = [p.strip().split("=", 1) for p in header.split(",")]
        t = int(dict(pairs)["t"])
    except (KeyError, ValueError, AttributeError, TypeError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    body = body.encode() if isinstance(body, str) else body
    mac = hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()
    return any(k == "v1" and hmac.compare_digest(mac, v) for k, v in pairs)
