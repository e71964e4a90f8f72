"""API keys for the admin endpoints: only SHA-256 digests are configured, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_key() -> tuple[str, str]:
    """A fresh random key and the digest to put in `server.admin_key_sha256`."""
    key = secrets.token_urlsafe(32)
    return key, digest(key)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def matching_key_id(presented: str | None, digests: tuple[str, ...]) -> str | None:
    """The short id (digest prefix) of the configured key that matches, or None; every digest is compared."""
    if not presented:
        return None
    candidate = digest(presented)
    found = None
    for stored in digests:
        if hmac.compare_digest(candidate, stored):
            found = stored[:8]
    return found
