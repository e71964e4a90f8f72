"""Reloads built in a child process, as `kb serve` and `kb schedule` run them, with the real encoder, engine and
review database: the run comes back as in process, the gates' and the lock's refusals and an error's status and
code cross the pipe, and a build killed mid-way takes only the child with it."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from kb_service.errors import KbError
from kb_service.ingest.readers import read_records
from kb_service.reload.apart import BuildProcessError, reload_apart
from kb_service.reload.run import ReloadBusyError, ReloadRefusedError, history_of, reload_lock, run_reload
from kb_service.runtime import Runtime
from tests.conftest import REPO, config_text, make_config, wait_for


def test_a_reload_built_apart_switches_and_reports_its_run(reviewed):
    config, database = reviewed
    runtime = Runtime(config)
    run = reload_apart(runtime, "test", False)
    assert run.status == "succeeded" and run.trigger == "test" and run.counts.added == run.counts.records > 1000
    assert runtime.engine.current_name() == run.version
    assert history_of(runtime).runs(1)[0] == run
    kids = [row["kid"] for row in database.listing("approved", limit=10_000)]
    database.set_status(kids[: len(kids) * 3 // 10], "rejected", "carol")
    with pytest.raises(ReloadRefusedError, match="removed_ratio") as refused:
        reload_apart(runtime, "test", False)
    assert refused.value.run.status == "refused" and refused.value.run.id == run.id + 1
    assert runtime.engine.current_name() == run.version
    with reload_lock(runtime.engine), pytest.raises(ReloadBusyError, match="another reload is running"):
        reload_apart(runtime, "test", False)  # answered before a process is started


def test_an_error_in_the_child_keeps_its_status_code_and_field(tmp_path):
    config = make_config(tmp_path / "data", ("files: []", f"files: [{tmp_path / 'missing.jsonl'}]"))
    runtime = Runtime(config)
    with pytest.raises(KbError) as in_process:
        run_reload(runtime)
    with pytest.raises(KbError) as apart:
        reload_apart(runtime, "test", False)
    assert in_process.value.http_status == 400  # the caller's file, not an internal error
    assert (apart.value.http_status, apart.value.code, apart.value.exit_code, apart.value.to_json()) == (
        in_process.value.http_status, in_process.value.code, in_process.value.exit_code, in_process.value.to_json())


def _children() -> list[int]:
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        pids += [int(pid) for pid in (task / "children").read_text().split()]
    return [pid for pid in pids if b"kb_service.reload.apart" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def _started(caplog) -> int:
    return sum("building in process" in record.getMessage() for record in caplog.records)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the child through Linux's /proc")
def test_a_build_killed_mid_way_leaves_the_served_version_and_the_next_reload_runs(reviewed, small_kb_file, caplog):
    config, database = reviewed
    runtime = Runtime(config)
    served = run_reload(runtime).version
    fresh = uuid.uuid4().hex  # new text, so the build has seconds of encoding to be killed in
    edited = [replace(r, value=f"{r.value} {fresh}") for r in read_records([str(small_kb_file)]).records[:200]]
    database.import_records(edited, status="approved", reviewer="dave")
    raised: list[BaseException] = []

    def reload() -> None:
        try:
            reload_apart(runtime, "test", False)
        except BaseException as err:
            raised.append(err)

    caplog.set_level(logging.INFO, logger="kb_service.reload.apart")
    thread = threading.Thread(target=reload)
    thread.start()
    (child,) = wait_for(_children, seconds=60)
    # refused by the lock the server holds for its build process, even before that process has imported
    # anything, and without starting a second one
    with pytest.raises(ReloadBusyError):
        reload_apart(runtime, "test", False)
    wait_for(lambda: _started(caplog))  # the first one's line, which may follow its process by a moment
    assert _children() == [child] and _started(caplog) == 1
    deadline = time.monotonic() + 120
    while history_of(runtime).runs(1)[0].status != "running":  # the child has begun
        assert time.monotonic() < deadline and thread.is_alive(), raised
        time.sleep(0.02)
    os.kill(child, signal.SIGKILL)
    thread.join(60)
    assert len(raised) == 1 and isinstance(raised[0], BuildProcessError), raised
    assert "SIGKILL" in str(raised[0]) and raised[0].http_status == 500
    assert runtime.engine.current_name() == served
    after = run_reload(runtime)
    assert after.status == "succeeded" and after.counts.updated == len(edited)
    assert [r.status for r in history_of(runtime).runs(2)] == ["succeeded", "crashed"]


def test_kb_schedule_builds_each_reload_in_a_process_of_its_own(reviewed, tmp_path):
    config, _ = reviewed
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config_text(("data_dir: data", f"data_dir: {config.data_path}"),
                                       ("  interval_minutes: null", "  interval_minutes: 0.01")), encoding="utf-8")
    log_path = tmp_path / "schedule.log"
    with log_path.open("w") as log_file:
        scheduler = subprocess.Popen([sys.executable, "-m", "kb_service.cli", "--config", str(config_path), "schedule"],
                                     stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        run = wait_for(lambda: next((r for r in history_of(Runtime(config)).runs() if r.status == "succeeded"), None),
                       seconds=120)
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)
    assert run.trigger == "schedule" and Runtime(config).engine.current_name() == run.version
    builders = {int(pid) for pid in re.findall(r"reload \(schedule\) building in process (\d+)", log_path.read_text())}
    assert builders and scheduler.pid not in builders
