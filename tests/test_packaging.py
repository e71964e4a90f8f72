"""The wheel as a user installs it: built from this checkout, installed (not editable) into a fresh virtualenv,
and `kb demo` plus a search run from a directory that is not the checkout."""

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO


def _run(*command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_the_installed_wheel_runs_kb_demo_and_a_search_from_any_directory(tmp_path):
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir",
         tmp_path / "dist", REPO)
    wheel = next((tmp_path / "dist").glob("kb_service-*.whl"))
    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # The dependencies (torch alone is gigabytes) come from the test's own environment, appended after the
    # fresh site-packages: the project itself can only be imported from the wheel installed there.
    fresh_site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (fresh_site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    _run(python, "-m", "pip", "install", "--quiet", "--no-deps", wheel)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    environment = {k: v for k, v in os.environ.items() if k not in ("KB_CONFIG", "KB_DATA_DIR", "PYTHONPATH")}
    kb = env_dir / "bin" / "kb"
    located = _run(python, "-c", "import kb_service; print(kb_service.__file__)", cwd=workdir, env=environment)
    assert Path(located.stdout.strip()).is_relative_to(fresh_site)
    _run(kb, "demo", "--min-population", "1500000", cwd=workdir, env=environment)
    found = json.loads(_run(kb, "search", "杭州的人口", "--size", "1", "--json", cwd=workdir, env=environment).stdout)
    assert (found["hits"][0]["knowledge"], found["hits"][0]["attribute"]) == ("杭州", "人口")
    versions = json.loads(_run(kb, "versions", "--json", cwd=workdir, env=environment).stdout)
    assert versions[0]["current"] and (workdir / "data" / "embedded" / "CURRENT").is_file()
