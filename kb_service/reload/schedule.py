"""Scheduled reloads with APScheduler: a cron or an interval from config.yaml's `reload` section.

Within a process a job never overlaps itself (max_instances 1) and missed runs coalesce into one, run if
missed by less than `misfire_grace_s`; across processes (several server workers, a separate scheduler) the
reload lock lets one run and the others record a skipped run.
"""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from kb_service import metrics
from kb_service.reload.history import RunStatus
from kb_service.reload.run import ReloadBusyError, Reloader, ReloadRefusedError, history_of, run_reload
from kb_service.runtime import Runtime

log = logging.getLogger(__name__)


def scheduled_reload(runtime: Runtime, reload: Reloader = run_reload) -> None:
    """The job: a reload whose every outcome lands in the history and the log, never in the scheduler."""
    try:
        reload(runtime, "schedule", False)
    except ReloadBusyError as err:
        history = history_of(runtime)
        run = history.start("schedule")
        run.status, run.message = RunStatus.SKIPPED, str(err)
        history.finish(run)
        metrics.RELOADS.labels(RunStatus.SKIPPED.value).inc()
        log.info("scheduled reload skipped: %s", err)
    except ReloadRefusedError as err:
        log.error("scheduled reload refused: %s", err)
    except Exception:
        log.exception("scheduled reload failed; still serving the previous version")


def build_scheduler(runtime: Runtime, blocking: bool = False, reload: Reloader = run_reload) -> BaseScheduler | None:
    """A scheduler running the configured reloads with `reload`, or None when no schedule is configured."""
    settings = runtime.config.reload
    if settings.cron:
        trigger = CronTrigger.from_crontab(settings.cron)
    elif settings.interval_minutes:
        trigger = IntervalTrigger(minutes=settings.interval_minutes)
    else:
        return None
    kind = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = kind(job_defaults={"coalesce": True, "max_instances": 1,
                                   "misfire_grace_time": settings.misfire_grace_s})
    scheduler.add_job(scheduled_reload, trigger, args=[runtime, reload], id="kb-reload", name="KB reload")
    return scheduler
