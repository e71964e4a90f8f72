"""A real 3-node Elasticsearch cluster (scripts/es-local with KB_ES_NODES=3 on loopback ports) losing a node:
`kill -9` of one node while searches and a reload run. Slow: it starts its own cluster.

Indices have one replica, the service knows all three nodes, and the client retries another node, so no
search may fail; the reload either completes or is refused cleanly with the alias untouched; the killed
node rejoins and the cluster returns to green.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid

import pytest
import requests

from kb_service.engines import open_engine
from kb_service.ingest.loading import load_files
from kb_service.serving.service import SearchService
from tests.conftest import REPO, make_config, searching_in_background

pytestmark = pytest.mark.slow
PORT = 9250
NODES = [f"http://127.0.0.1:{PORT + i}" for i in range(3)]
SCRIPT = str(REPO / "scripts" / "es-local")
ENVIRONMENT = {**os.environ, "KB_ES_PORT": str(PORT), "KB_ES_NODES": "3", "KB_ES_HEAP": "384m"}


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], env=ENVIRONMENT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def three_nodes():
    started = _script("start")
    if started.returncode != 0:
        pytest.skip(f"no 3-node cluster: {started.stderr.strip()[-300:]}")
    assert started.stdout.split() == NODES
    yield NODES
    _script("stop")


def test_killing_a_node_during_searches_and_a_reload_fails_no_search(tmp_path, three_nodes, small_kb_file,
                                                                     capital_kb_file):
    prefix = f"kbfault{uuid.uuid4().hex[:6]}"
    config = make_config(
        tmp_path / "data",
        ("  kind: embedded ", "  kind: elasticsearch "),
        ("  hosts: [http://127.0.0.1:9200]", f"  hosts: [{', '.join(three_nodes)}]"),
        ("  index_prefix: knowledge ", f"  index_prefix: {prefix} "),
        ("  read_alias: knowledge_current_reader", f"  read_alias: {prefix}_current_reader"),
        ("  meta_index: knowledge_meta ", f"  meta_index: {prefix}_meta "),
        ("  replicas: 0", "  replicas: 1"),
        ("  max_retries: 1", "  max_retries: 3"),
        ("  mode: exact ", "  mode: fast "))  # integ-test-zip has no painless: the service applies the formula
    load_files(config, [str(capital_kb_file)])
    engine = open_engine(config)
    first = engine.current_name()
    service = SearchService(config)
    outcome: dict = {}

    def reload() -> None:
        try:
            outcome["report"] = load_files(config, [str(small_kb_file)])
        except Exception as err:  # a clean refusal is allowed; what matters is the alias afterwards
            outcome["error"] = err

    with searching_in_background(service, "哥伦比亚的首都", threads=3) as load:
        reloading = threading.Thread(target=reload)
        reloading.start()
        assert _script("kill-node", "3").returncode == 0
        reloading.join(timeout=600)
        searched = load.count
        while load.count < searched + 30:
            time.sleep(0.05)
    served = engine.current_name()
    print(f"{load.count} searches while node 3 was killed, {len(load.errors)} failed; reload: "
          f"{'completed, serving ' + served if 'report' in outcome else 'refused: ' + str(outcome.get('error'))}")
    assert load.errors == [] and load.count > 30
    if "report" in outcome:
        assert served != first and served == outcome["report"].version
    else:
        assert served == first, "a failed reload must leave the alias where it was"
    rejoined = _script("start-node", "3")
    assert rejoined.returncode == 0, rejoined.stderr[-500:]
    health = requests.get(f"{three_nodes[0]}/_cluster/health", params={
        "wait_for_status": "green", "wait_for_nodes": "3", "timeout": "60s"}, timeout=70).json()
    assert health["status"] == "green" and health["number_of_nodes"] == 3
    requests.delete(f"{three_nodes[0]}/{prefix}*", params={"expand_wildcards": "all"}, timeout=60)
