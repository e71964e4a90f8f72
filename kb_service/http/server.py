"""Serving the WSGI app with waitress, bounded at the edge and tolerant of raw UTF-8 in the request line.

`curl 'localhost:8000/search?q=杭州的人口'` sends the Chinese bytes unencoded, which HTTP does not allow and
every strict server (waitress, gunicorn, cheroot, uvicorn) refuses with 400. Browsers percent-encode such
bytes; this parser does the same before waitress parses the line, so hand-typed queries just work. Bytes
below 0x80 are untouched, so nothing a well-formed request says can change meaning.

The edge applies `server.*` before the app sees a byte: a body declared larger than `max_body_bytes` is
refused from its headers; a request must arrive whole within `request_timeout_s` of its first byte; idle
connections close after `channel_timeout_s`; and at `connection_limit` the server sheds the connections that
cost it least to lose (idle ones and requests still arriving, oldest first) instead of no longer accepting,
so slow or stalled clients cannot keep a normal one out.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import time
from collections.abc import Callable

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask

from kb_service.config import ServerConfig
from kb_service.errors import error_body

log = logging.getLogger(__name__)
SHED_PER_ACCEPT = 8  # connections shed at once when full, so a flood does not cost a scan per accept
DRAIN_IDLE_S = 2.0  # a draining worker closes a connection once it has been quiet this long
ERROR_FIELDS = {413: "body", 431: "headers"}


def percent_encode_high_bytes(line: bytes) -> bytes:
    return b"".join(b"%%%02X" % byte if byte >= 0x80 else bytes((byte,)) for byte in line)


class Utf8RequestLineParser(HTTPRequestParser):
    def parse_header(self, header_plus: bytes):
        end = header_plus.find(b"\r\n")
        if end > 0 and any(byte >= 0x80 for byte in header_plus[:end]):
            header_plus = percent_encode_high_bytes(header_plus[:end]) + header_plus[end:]
        return super().parse_header(header_plus)


class JsonErrorTask(ErrorTask):
    """waitress's own refusals (a body over the limit, oversized headers, a malformed request) in the API's
    JSON error shape, so a client branches on one format."""

    def execute(self):
        error = self.request.error
        field = ERROR_FIELDS.get(error.code, "request")
        body = json.dumps(error_body(error.code, f"{error.reason}: {error.body}", field,
                                     code=error.reason.lower().replace(" ", "_"))).encode("utf-8")
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class DrainingTask(WSGITask):
    """While the worker drains, every answer says `Connection: close`, so a keep-alive client sends its next
    request on a new connection (to another worker) instead of racing the close of this one."""

    def build_response_header(self):
        if self.channel.server.drain_until is not None:
            self.set_close_on_finish()
        return super().build_response_header()


class EdgeChannel(HTTPChannel):
    """A connection that remembers when the request it is still receiving began."""

    parser_class = Utf8RequestLineParser
    task_class = DrainingTask
    error_task_class = JsonErrorTask
    request_started: float | None = None

    def received(self, data: bytes) -> bool:
        if self.request_started is None and data:
            self.request_started = time.time()
        handled = super().received(data)
        if self.request is None:  # nothing half-received is left
            self.request_started = None
        return handled

    def sheddable(self) -> bool:
        """Closing it loses no work: no request of it is queued or running and nothing is left to send."""
        return not (self.requests or self.will_close or self.close_when_flushed or self.total_outbufs_len)

    def idle_between_requests(self, now: float) -> bool:
        """A drain may close it: nothing of it is in flight and it has been quiet for `DRAIN_IDLE_S` (a busy
        keep-alive client gets `Connection: close` on its next answer instead, and a connection just accepted
        is served), so no client's request meets a connection closing under it."""
        if not self.sheddable() or self.request_started is not None:
            return False
        return now - self.last_activity > DRAIN_IDLE_S


class _Probe:
    """A no-op task: when a request thread has run it, the pool can still take work."""

    def __init__(self):
        self.done = False

    def service(self) -> None:
        self.done = True

    def cancel(self) -> None:
        self.done = True

    def defer(self) -> None:
        pass


class EdgeServer(TcpWSGIServer):
    """waitress's TCP server with the request deadline, shedding at the connection limit, a drain on SIGTERM
    and a heartbeat that proves both the event loop and the request threads still work."""

    channel_class = EdgeChannel
    request_timeout_s = 10.0
    drain_until: float | None = None  # set by SIGTERM: finish what is in flight until then, accept nothing
    heartbeat: Callable[[], None] | None = None
    _probe: _Probe | None = None
    next_channel_cleanup: float  # waitress's own, set in its constructor

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        for channel in self.active_channels.values():
            started = channel.request_started
            if started is not None and now - started > self.request_timeout_s and channel.sheddable():
                channel.will_close = True
        if self.heartbeat is not None and (self._probe is None or self._probe.done):  # the last probe ran
            self.heartbeat()
            self._probe = _Probe()
            self.task_dispatcher.add_task(self._probe)

    def drain(self, seconds: float) -> None:
        """Stop accepting and let go of the listening socket (the other workers, or the parent, still hold it:
        connections waiting to be accepted go to them, and once the last holder lets go new ones are refused
        rather than left to be reset); the loop ends once every in-flight request is answered or `seconds`
        have passed."""
        self.drain_until = time.time() + seconds
        self.accepting = False

    def _let_go(self) -> None:
        """Take the connections the kernel has already queued (they are answered, with `Connection: close`),
        then close the listening socket. Done inside the loop, where it is never polled again: closed by the
        signal handler it could vanish between the loop listing the descriptors to wait on and the wait."""
        for _ in range(self.adj.backlog):
            waiting = len(self._map)
            self.handle_accept()  # non-blocking: nothing queued, nothing added
            if len(self._map) == waiting:
                break
        self.socket.close()

    def _open(self) -> list[EdgeChannel]:
        return [c for c in self.active_channels.values() if not (c.will_close or c.close_when_flushed)]

    def readable(self) -> bool:
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if self.drain_until is not None:
            if self.socket.fileno() >= 0:
                self._let_go()
            busy = False
            for channel in self.active_channels.values():
                if channel.idle_between_requests(now):  # its client's next request goes to another worker
                    channel.will_close = True
                elif not channel.will_close:
                    busy = True  # a request in flight, arriving, about to arrive or its answer still leaving
            if not busy or now > self.drain_until:
                raise SystemExit(0)  # waitress's run() ends the loop and the request threads
            return False
        if not self.accepting:
            return False
        open_channels = self._open()
        if len(open_channels) < self.adj.connection_limit:
            return True
        victims = sorted((c for c in open_channels if c.sheddable()),
                         key=lambda c: c.request_started or c.last_activity)[:SHED_PER_ACCEPT]
        for victim in victims:
            victim.will_close = True
        return bool(victims)


def run_server(app, server: ServerConfig, listener: socket.socket,
               heartbeat: Callable[[], None] | None = None) -> None:
    """Serve `app` on `listener` with `server`'s edge limits until SIGTERM (or SIGINT), which drains: no new
    connection, in-flight requests answered within `server.drain_s`, then return. `heartbeat` is called about
    once a second while the event loop and a request thread both still work."""
    adj = Adjustments(sockets=[listener], threads=server.threads, ident="kb-service",
                      connection_limit=server.connection_limit, channel_timeout=max(1, round(server.channel_timeout_s)),
                      cleanup_interval=1, max_request_body_size=server.max_body_bytes)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    edge = EdgeServer(app, {}, True, listener, dispatcher=dispatcher, adj=adj, bind_socket=False,
                      sockinfo=(listener.family, listener.type, listener.proto, listener.getsockname()))
    edge.request_timeout_s = server.request_timeout_s
    edge.heartbeat = heartbeat

    def drain(signum, frame) -> None:
        log.info("draining (signal %d): in-flight requests get up to %.0f s", signum, server.drain_s)
        edge.drain(server.drain_s)
        edge.pull_trigger()  # wake the loop now rather than at its next timeout

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    edge.run()
    query_log = app.extensions.get("kb_query_log")
    if query_log is not None:  # the tally of the searches just answered, before the process goes
        query_log.flush(timeout_s=min(5.0, server.drain_s))
    log.info("drained")
