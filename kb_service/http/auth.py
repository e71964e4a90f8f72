"""Who may call what: API keys by role (only SHA-256 digests are configured, compared in constant time), the
client's address behind trusted proxies, a lockout after wrong keys that cannot lock the operator out, and
per-client rate limits.

Failures, lockouts, the keys that have worked from each address and the rate buckets live in one SQLite file
in the data directory, every change one `BEGIN IMMEDIATE` transaction, so every worker process counts the
same attempts: a guesser gains nothing from landing on another worker or from sending a burst.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
import time
from collections.abc import Callable

from flask import current_app, g, request
from sqlalchemy import Column, Float, Integer, MetaData, Table, Text, delete, select, update

from kb_service.config import Role, SecurityConfig
from kb_service.errors import AuthError, TooManyRequestsError
from kb_service.state import StateDatabase

audit = logging.getLogger("kb_service.audit")
KEY_FIELD = "X-API-Key"


def new_key() -> tuple[str, str]:
    """A fresh random key and the digest to configure for it (`security.<role>_key_sha256`)."""
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


def presented_key() -> str | None:
    """The key a request carries: `X-API-Key`, a bearer token, or the password of HTTP Basic credentials
    (what a browser sends for the console after its login prompt; the user name is ignored)."""
    if key := request.headers.get(KEY_FIELD):
        return key
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def client_address(trusted_proxies: tuple[str, ...]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy, in which case the right-most
    X-Forwarded-For entry that is not itself a trusted proxy (entries further left are the client's word)."""
    peer = request.remote_addr or "unknown"
    if not trusted_proxies:
        return peer
    networks = [ipaddress.ip_network(n, strict=False) for n in trusted_proxies]

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    if not trusted(peer):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("X-Forwarded-For")).split(",") if h.strip()]
    for hop in reversed(hops):
        if not trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a proxy passed on garbage: count it against the proxy, not a made-up client
    return peer


_access = MetaData()
failures = Table("failures", _access, Column("address", Text, primary_key=True), Column("count", Integer),
                 Column("until", Float), Column("strikes", Integer), Column("touched", Float))
trusted = Table("trusted", _access, Column("address", Text, primary_key=True), Column("key_id", Text, primary_key=True),
                Column("touched", Float))
buckets = Table("buckets", _access, Column("name", Text, primary_key=True), Column("tokens", Float),
                Column("touched", Float))


class AccessStore:
    """Failed keys and lockouts per client address, the (address, key id) pairs that have worked, and token
    buckets for rate limits, in the state database: shared by the worker processes, and with a shared
    `state.database` by every host, so a guesser gains nothing by spreading tries over them. Each check is
    one transaction holding the address's row (SQLite: the writer lock; PostgreSQL: the row lock), so a
    concurrent burst gets no more tries than a sequence. Bounded: the least recently touched rows go first."""

    MAX_ROWS = 10_000

    def __init__(self, state: StateDatabase):
        self.state = state

    def _locked(self, connection, table: Table, key: dict, defaults: dict):
        """The row with `key`, created from `defaults` when missing (the table trimmed then), locked until
        the transaction ends."""
        connection.execute(self.state.upsert(table, {**key, **defaults}, tuple(key), lambda new: {
            "touched": table.c.touched}))
        condition = [table.c[name] == value for name, value in key.items()]
        row = connection.execute(select(table).where(*condition).with_for_update()).one()
        if row.touched == defaults["touched"]:
            self._trim(connection, table)
        return row

    def admit(self, address: str, key_id: str | None, policy: SecurityConfig) -> int:
        """Whether a key check may go ahead: 0, or the seconds the address must still wait. A key id that has
        worked from this address before is always admitted; any other attempt is counted as a failure up
        front (undone by `succeeded`), so a concurrent burst gets no more tries than a sequence. The same
        statements run whatever the key, so timing tells a locked-out guesser nothing."""
        now = time.time()
        with self.state.ready(failures, trusted, buckets).begin() as connection:
            row = self._locked(connection, failures, {"address": address},
                               {"count": 0, "until": 0.0, "strikes": 0, "touched": now})
            known = connection.execute(select(trusted.c.address).where(
                trusted.c.address == address, trusted.c.key_id == (key_id or ""))).first()
            count, until, strikes, touched = row.count, row.until, row.strikes, row.touched
            if now - touched > policy.lockout_max_s:  # quiet for a long while: start over
                count, until, strikes = 0, 0.0, 0
            if known:
                return 0
            if until > now:
                return math.ceil(until - now)
            if until:  # a lockout that has run out: a fresh allowance, the strikes remembered
                count, until = 0, 0.0
            if count >= policy.failures_allowed:
                until = now + min(policy.lockout_max_s, policy.lockout_s * 2 ** min(strikes, 30))
                strikes += 1
                wait = math.ceil(until - now)
            else:
                count, wait = count + 1, 0
            connection.execute(update(failures).where(failures.c.address == address).values(
                count=count, until=until, strikes=strikes, touched=now))
            return wait

    def succeeded(self, address: str, key_id: str) -> None:
        """The key worked: remember the pair and take back the failure `admit` counted in advance."""
        now = time.time()
        with self.state.ready(failures, trusted, buckets).begin() as connection:
            connection.execute(update(failures).where(failures.c.address == address, failures.c.until == 0,
                                                      failures.c.count > 0).values(count=failures.c.count - 1))
            self._locked(connection, trusted, {"address": address, "key_id": key_id}, {"touched": now})
            connection.execute(update(trusted).where(trusted.c.address == address, trusted.c.key_id == key_id)
                               .values(touched=now))

    def take(self, name: str, per_minute: int) -> int:
        """One request from the token bucket `name` (a burst of `per_minute`, refilled evenly): 0, or the
        seconds until the next request would be allowed."""
        now = time.time()
        with self.state.ready(failures, trusted, buckets).begin() as connection:
            row = self._locked(connection, buckets, {"name": name}, {"tokens": float(per_minute), "touched": now})
            tokens = min(per_minute, row.tokens + (now - row.touched) * per_minute / 60)
            if tokens < 1:
                return max(1, math.ceil((1 - tokens) * 60 / per_minute))
            connection.execute(update(buckets).where(buckets.c.name == name).values(tokens=tokens - 1, touched=now))
            return 0

    def _trim(self, connection, table: Table) -> None:
        """Forgets all but the MAX_ROWS most recently touched rows."""
        threshold = connection.execute(select(table.c.touched).order_by(table.c.touched.desc())
                                       .offset(self.MAX_ROWS).limit(1)).scalar()
        if threshold is not None:
            connection.execute(delete(table).where(table.c.touched <= threshold))


def _policy() -> SecurityConfig:
    return current_app.extensions["kb_service"].config.security


def authorise(role: Role, action: str, challenge: bool = False) -> str | None:
    """Checks the request's key for `role` before anything else it carries is read: None when the role's
    routes are open (no search keys configured), else the matching key's id (also `g.key_id`). Refuses with
    403 when no key could open the role, 401 for a missing key, 429 while the client is locked out and 401
    for a wrong key (`challenge` asks a browser for Basic credentials); only wrong keys count towards the
    lockout."""
    policy = _policy()
    digests = policy.opening(role)
    if role is Role.SEARCH and not policy.search_key_sha256:
        return None
    if not digests:
        raise AuthError(f"the {role.value} API is disabled: configure security.{role.value}_key_sha256 "
                        "(see `kb key`)", status=403)
    address = client_address(policy.trusted_proxies)
    presented = presented_key()
    if presented is None:  # not a guess (a browser's first visit sends none): refused, never counted
        raise AuthError(f"this route needs an API key for the {role.value} role (send it as {KEY_FIELD})",
                        challenge=challenge)
    store: AccessStore = current_app.extensions["kb_access"]
    key_id = matching_key_id(presented, digests)
    wait = store.admit(address, key_id, policy)
    if wait:
        audit.warning("refused %s (%s) from %s: locked out for %d s", action, role.value, address, wait)
        raise TooManyRequestsError(f"too many wrong API keys from this address: retry in {wait} s", wait, KEY_FIELD)
    if key_id is None:
        audit.warning("refused %s (%s) from %s: bad or missing API key", action, role.value, address)
        raise AuthError(f"missing or wrong API key for the {role.value} role (send it as {KEY_FIELD})",
                        challenge=challenge)
    store.succeeded(address, key_id)
    if role is not Role.SEARCH:
        audit.info("%s (%s) by key %s from %s", action, role.value, key_id, address)
    g.key_id = key_id
    return key_id


def role_required(role: Role, action: str, challenge: bool = False) -> Callable:
    """A view that runs only after `authorise(role, action)` lets the request through."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def checked(*args, **kwargs):
            authorise(role, action, challenge)
            return view(*args, **kwargs)

        return checked

    return decorate


def rate_limited(bucket: str, per_minute: int) -> None:
    """Refuses (429 with Retry-After) a client that has used up its `per_minute` allowance for `bucket`."""
    address = client_address(_policy().trusted_proxies)
    wait = current_app.extensions["kb_access"].take(f"{bucket}:{address}", per_minute)
    if wait:
        raise TooManyRequestsError(f"too many {bucket} requests from this address: retry in {wait} s", wait,
                                   code="rate_limited")
