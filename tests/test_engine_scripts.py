"""scripts/es-local and scripts/os-local from a checkout the engine's system user cannot enter.

As root the scripts run the engine as an unprivileged user; a checkout inside a 0700 directory (root's home,
a `mktemp -d` folder) used to hold the engine's files, so the node failed with 'Permission denied'. The
scripts now keep distribution, data and logs in a per-checkout folder under /var/tmp. Slow: each case
unpacks and starts a real node on its own port.
"""

import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="the engine user is only used as root")]


@pytest.mark.parametrize("script, port_variable, port, heap_variable", [
    ("es-local", "KB_ES_PORT", 9291, "KB_ES_HEAP"),
    ("os-local", "KB_OS_PORT", 9292, "KB_OS_HEAP"),
])
def test_a_node_starts_from_a_checkout_inside_a_private_directory(script, port_variable, port, heap_variable):
    private = Path(tempfile.mkdtemp(prefix="kb-private-"))  # 0700, owned by root
    assert private.stat().st_mode & 0o777 == 0o700
    checkout = private / "checkout"
    shutil.copytree(REPOSITORY / "scripts", checkout / "scripts")
    environment = {**os.environ, port_variable: str(port), heap_variable: "512m"}
    run = [str(checkout / "scripts" / script)]
    try:
        started = subprocess.run([*run, "start"], env=environment, capture_output=True, text=True, timeout=600)
        assert started.returncode == 0, started.stderr[-2000:]
        url = started.stdout.strip().splitlines()[-1]
        assert url == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/_cluster/health", timeout=10) as response:
            assert response.status == 200
        assert not any(checkout.rglob("data")), "the engine's files must live outside the checkout"
    finally:
        subprocess.run([*run, "stop"], env=environment, capture_output=True, timeout=120)
        shutil.rmtree(private, ignore_errors=True)
