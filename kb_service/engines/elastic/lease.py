"""A lock every service host sharing one cluster respects: a lease document in the meta index.

A `flock` only reaches the processes of one host; hosts that share a cluster also share its versions and
alias, so two of them reloading at once would race on the switch. The lease is a document created with
`op_type=create` (exactly one creator wins), renewed while its holder works and carrying an expiry, so a
holder that dies (kill -9, a lost host) frees it within `reload_lease_s`. Renewal and release are
conditional on the document's sequence number, so a holder never extends or deletes a lease it lost.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kb_service.engines.elastic.dialect import Cluster

log = logging.getLogger(__name__)
LEASE_STATUS = "lease"  # the meta document's status: never a version (versions are 'complete' or 'loading')


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def cluster_lease(cluster: Cluster, meta_index: str, name: str, ttl_s: float,
                  refusal: Callable[[str], Exception]) -> Iterator[None]:
    """Holds the lease `name` for the block, renewing it every third of `ttl_s`; raises `refusal(holder)`
    when a live lease is held elsewhere."""
    doc = f"{meta_index}/_doc/lease-{name}"
    holder = holder_name()
    version = _acquire(cluster, meta_index, name, holder, ttl_s, refusal)
    stop = threading.Event()
    lost = threading.Event()

    def renew() -> None:
        nonlocal version
        while not stop.wait(ttl_s / 3):
            seq_no, term = version
            try:
                written = cluster.request("PUT", f"/{doc}", _body(holder, ttl_s),
                                          params={"if_seq_no": seq_no, "if_primary_term": term}, ignore=(409,))
            except Exception as err:  # the cluster is away: keep trying while the lease lasts
                log.warning("could not renew the %s lease: %s", name, err)
                continue
            if written is None:  # it expired and another holder took it
                lost.set()
                return
            version = written["_seq_no"], written["_primary_term"]

    renewer = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        if lost.is_set():
            log.error("the %s lease expired while held by %s; another holder may have run meanwhile", name, holder)
        else:
            seq_no, term = version
            cluster.request("DELETE", f"/{doc}", params={"if_seq_no": seq_no, "if_primary_term": term,
                                                          "refresh": "true"}, ignore=(404, 409))


def _acquire(cluster: Cluster, meta_index: str, name: str, holder: str, ttl_s: float,
             refusal: Callable[[str], Exception]) -> tuple[int, int]:
    for _ in range(2):
        created = cluster.request("PUT", f"/{meta_index}/_create/lease-{name}", _body(holder, ttl_s),
                                  params={"refresh": "true"}, ignore=(409,))
        if created is not None:
            return created["_seq_no"], created["_primary_term"]
        found = cluster.request("GET", f"/{meta_index}/_doc/lease-{name}", ignore=(404,))
        if not found or not found.get("found"):
            continue  # released between our create and read: try once more
        lease = found["_source"]["manifest"]
        if lease["expires_at"] > time.time():
            raise refusal(f"{lease['holder']} holds the {name} lease until "
                          f"{time.strftime('%H:%M:%S', time.localtime(lease['expires_at']))}")
        log.warning("taking over the %s lease of %s, which expired", name, lease["holder"])
        cluster.request("DELETE", f"/{meta_index}/_doc/lease-{name}", params={
            "if_seq_no": found["_seq_no"], "if_primary_term": found["_primary_term"], "refresh": "true"},
            ignore=(404, 409))
    raise refusal(f"the {name} lease changed hands while it was being taken")


def _body(holder: str, ttl_s: float) -> dict:
    now = time.time()
    return {"index": "", "status": LEASE_STATUS,
            "manifest": {"holder": holder, "acquired_at": now, "expires_at": now + ttl_s}}
