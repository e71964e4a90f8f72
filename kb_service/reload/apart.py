"""Reloads that build in a child process, so that a server's memory after many reloads is its memory after one.

A build's peak (records, segmentations, vectors, the link model's examples) ends with the child instead of
staying in the server's allocator, and a build the kernel's OOM killer or an operator kills takes only the
child with it: the server goes on serving the version it had. The child receives the parent's config and
environment over a pipe (never on its command line, where other users could read a secret), runs the same
gated reload as `kb reload`, and sends the run back. The server holds the reload lock for it from before it
starts until it ends, so a second reload is refused at once and the lock is free again if the server dies.
The child lives in a session of its own, so a SIGTERM to the server's process group lets a build that a
draining request waits for finish, and the kernel ends it when the thread waiting for it dies.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
from dataclasses import dataclass

from kb_service import logs, metrics
from kb_service.config import ServiceConfig
from kb_service.errors import KbError
from kb_service.lifetime import end_with_parent
from kb_service.reload.history import ReloadRun
from kb_service.reload.run import ReloadRefusedError, reload_lock, run_reload_locked
from kb_service.runtime import Environment, Runtime

log = logging.getLogger(__name__)


class BuildProcessError(KbError):
    """The child building a reload died before it could report (killed, out of memory); nothing was switched.
    Its run stays `running` in the history until the next reload marks it crashed."""

    code = "reload_failed"


@dataclass(frozen=True)
class Job:
    """What the child needs: the parent's config and environment as they are now, and the reload's options."""

    config: ServiceConfig
    environment: Environment
    trigger: str
    force: bool
    verbose: bool
    log_format: str


@dataclass(frozen=True)
class Outcome:
    """The child's answer: the run (succeeded or refused), or the error that stopped it, rebuilt as a KbError
    with the same status, exit code, code, message, field and details."""

    run: ReloadRun | None = None
    refused: bool = False
    error: tuple[int, int, str, str, str | None, dict] | None = None  # status, exit code, code, message, field, details


def reload_apart(runtime: Runtime, trigger: str = "manual", force: bool = False) -> ReloadRun:
    """`run_reload` in a child process; returns its run or raises what it raised (ReloadRefusedError,
    ReloadBusyError, a KbError with the child's status and code, BuildProcessError when it died)."""
    job = Job(runtime.config, runtime.environment, trigger, force, log.isEnabledFor(logging.DEBUG),
              runtime.config.server.log_format.value)
    with reload_lock(runtime.engine):
        child = subprocess.Popen([sys.executable, "-m", "kb_service.reload.apart", str(os.getpid())],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        log.info("reload (%s) building in process %d", trigger, child.pid)
        answer, _ = child.communicate(pickle.dumps(job))
        metrics.forget_process(child.pid)
    if child.returncode != 0 or not answer:
        how = (f"signal {signal.Signals(-child.returncode).name}" if child.returncode < 0
               else f"exit status {child.returncode}")
        raise BuildProcessError(f"the reload's build process {child.pid} ended ({how}) before it reported; "
                                "still serving the previous version")
    outcome: Outcome = pickle.loads(answer)  # our own child's answer, over our own pipe
    if outcome.run is not None:
        if outcome.refused:
            raise ReloadRefusedError(outcome.run)
        return outcome.run
    assert outcome.error is not None
    status, exit_code, code, message, field, details = outcome.error
    error = KbError(message, field, **details)
    error.http_status, error.exit_code, error.code = status, exit_code, code
    raise error


def _child(parent: int) -> int:
    end_with_parent(signal.SIGKILL, parent)
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a library that prints must not corrupt the answer
    job: Job = pickle.loads(sys.stdin.buffer.read())  # from the parent that started us
    logs.configure(job.verbose, job.log_format)
    with Runtime(job.config, job.environment) as runtime:
        try:
            outcome = Outcome(run=run_reload_locked(runtime, job.trigger, job.force))  # the parent holds the lock
        except ReloadRefusedError as err:
            outcome = Outcome(run=err.run, refused=True)
        except KbError as err:
            outcome = Outcome(error=(err.http_status, err.exit_code, err.code, err.message, err.field, err.details))
        except Exception as err:  # the run is recorded as failed; the parent reports it as a KbError
            log.exception("reload failed")
            outcome = Outcome(error=(500, 1, "reload_failed", f"{type(err).__name__}: {err}", None, {}))
    answer.write(pickle.dumps(outcome))
    answer.close()
    return 0


if __name__ == "__main__":
    from kb_service.reload import apart  # the answer's classes pickled under their module's name, not __main__

    sys.exit(apart._child(int(sys.argv[1])))
