"""A secured cluster as production runs one: a real OpenSearch node with the security plugin, TLS on HTTP and
an internal user (`KB_OS_SECURE=1 scripts/os-local`). The service loads, searches and reloads through the CA
bundle and a password file; each wrong connection setting fails in one line naming the setting; no secret
reaches a log line, a message or the public config version."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from kb_service.config import parse_config
from kb_service.engines.elastic.engine import ClusterEngine
from kb_service.ingest.loading import load_files
from kb_service.ingest.readers import read_records
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from scoring.planner import SearchRequest
from tests.conftest import REPO, accept_forever, config_text, data_dir_sharing_cache

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _config_text(data_dir: Path, url: str, prefix: str, *settings: tuple[str, str]) -> str:
    """The repository's config on the secured node, with connection `settings` (key, value) replacing the
    defaults."""
    return config_text(
        ("data_dir: data", f"data_dir: {data_dir}"),
        ("  kind: embedded ", "  kind: opensearch "),
        ("  hosts: [http://127.0.0.1:9200]", f"  hosts: [{url}]"),
        ("  index_prefix: knowledge ", f"  index_prefix: {prefix} "),
        ("  read_alias: knowledge_current_reader", f"  read_alias: {prefix}_current_reader"),
        ("  meta_index: knowledge_meta ", f"  meta_index: {prefix}_meta "),
        *((f"  {key}: null ", f"  {key}: {value} ") for key, value in settings),
    )


def _settings(node) -> list[tuple[str, str]]:
    return [("ca_certs", str(node.ca_certs)), ("username", node.username),
            ("password_file", str(node.password_file))]


@pytest.fixture()
def clean_environment(monkeypatch):
    """No connection setting from the environment: each test states its own ($KB_OS_URL points CI's tests
    at the plain node)."""
    for name in ("KB_OS_URL", "KB_OS_USERNAME", "KB_OS_PASSWORD", "KB_OS_API_KEY", "KB_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def _kb(config_file: Path, *args: str, **environment: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KB_OS_", "KB_ES_", "KB_CONFIG"))}
    return subprocess.run([sys.executable, "-m", "kb_service.cli", "--config", str(config_file), *args],
                          env={**base, **environment}, cwd=REPO, capture_output=True, text=True, timeout=300)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificate_authority(folder: Path, name: str) -> Path:
    """A CA of this test's own (openssl): trusted by nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("genpkey", "-quiet", "-algorithm", "RSA", "-out", f"{name}-key.pem", cwd=folder)
    _openssl("req", "-x509", "-new", "-key", f"{name}-key.pem", "-subj", f"/CN={name}", "-days", "30",
             "-out", f"{name}.pem", cwd=folder)
    return folder / f"{name}.pem"


def _expired_certificate(folder: Path, ca: Path) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1, signed by `ca`, valid only during 2020 (openssl ca sets the dates)."""
    (folder / "index.txt").write_text("")
    (folder / "serial").write_text("01\n")
    (folder / "ca.cnf").write_text(
        "[ca]\ndefault_ca = local\n[local]\ndatabase = index.txt\nserial = serial\nnew_certs_dir = .\n"
        "default_md = sha256\npolicy = any\nunique_subject = no\ncopy_extensions = none\n"
        "x509_extensions = server\n[any]\ncommonName = supplied\n"
        "[server]\nsubjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n")
    _openssl("genpkey", "-quiet", "-algorithm", "RSA", "-out", "server-key.pem", cwd=folder)
    _openssl("req", "-new", "-key", "server-key.pem", "-subj", "/CN=127.0.0.1", "-out", "server.csr", cwd=folder)
    _openssl("ca", "-batch", "-config", "ca.cnf", "-cert", str(ca), "-keyfile", str(ca).replace(".pem", "-key.pem"),
             "-startdate", "20200101000000Z", "-enddate", "20201231000000Z", "-in", "server.csr",
             "-out", "server.pem", cwd=folder)
    return folder / "server.pem", folder / "server-key.pem"


class TlsListener:
    """A real TLS endpoint presenting a given certificate (an expired one): what a node with a lapsed
    certificate shows a client, without breaking the node other tests share."""

    def __init__(self, certificate: Path, key: Path):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificate, key)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.server.getsockname()[1]}"
        accept_forever(self.server, self._handshake)

    def _handshake(self, client: socket.socket) -> None:
        with contextlib.suppress(ssl.SSLError, OSError), self.context.wrap_socket(client, server_side=True):
            pass


def test_the_node_is_secured(secured_opensearch):
    """The premise of this file: without the CA the node's certificate is refused, without a password the
    node answers 401."""
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(secured_opensearch.url, timeout=10)
    assert requests.get(secured_opensearch.url, timeout=10, verify=str(secured_opensearch.ca_certs)).status_code == 401


def test_load_search_and_reload_through_ca_and_password_file(tmp_path, secured_opensearch, small_kb_file,
                                                              embedding_cache, clean_environment):
    from kb_service.reload.review import ReviewDatabase
    from kb_service.reload.run import run_reload

    data_dir = data_dir_sharing_cache(tmp_path / "data", embedding_cache)
    prefix = f"kbsec{uuid.uuid4().hex[:8]}"
    config = parse_config(_config_text(data_dir, secured_opensearch.url, prefix, *_settings(secured_opensearch)),
                          "config.yaml")
    try:
        loaded = load_files(Runtime(config), [str(small_kb_file)])
        hits = SearchService(Runtime(config)).search(SearchRequest(query="杭州的人口", size=3)).hits
        assert (hits[0].record.knowledge, hits[0].record.attribute) == ("杭州", "人口")
        database = ReviewDatabase(config.reload.database_url(config.paths))
        database.import_records(read_records([str(small_kb_file)]).records, status="approved", reviewer="import")
        reloaded = run_reload(Runtime(config))
        assert reloaded.status == "succeeded" and reloaded.version != loaded.version
        assert ClusterEngine(config, {}).current_name() == reloaded.version
    finally:
        ClusterEngine(config, {}).cluster.request("DELETE", f"/{prefix}*", params={"expand_wildcards": "all"},
                                              ignore=(404,))


def test_the_cli_reaches_the_node_with_the_password_from_the_environment(tmp_path, secured_opensearch):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(_config_text(tmp_path / "data", secured_opensearch.url, "kbsecnone",
                                        ("ca_certs", str(secured_opensearch.ca_certs)),
                                        ("username", secured_opensearch.username)), encoding="utf-8")
    password = secured_opensearch.password_file.read_text().strip()
    listed = _kb(config_file, "-v", "versions", "--json", KB_OS_PASSWORD=password)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert password not in listed.stdout + listed.stderr  # -v logs every request the client makes


def _refusal(tmp_path, node, *settings: tuple[str, str], url: str | None = None, **environment: str) -> str:
    """`kb versions` with these connection settings: it must fail with exit 2 and one line; the line."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(_config_text(tmp_path / "data", url or node.url, "kbsecnone", *settings), encoding="utf-8")
    result = _kb(config_file, "versions", **environment)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_wrong_password_names_the_credentials_and_never_shows_them(tmp_path, secured_opensearch):
    wrong = "not-the-password-" + uuid.uuid4().hex
    line = _refusal(tmp_path, secured_opensearch, ("ca_certs", str(secured_opensearch.ca_certs)),
                    ("username", secured_opensearch.username), KB_OS_PASSWORD=wrong)
    assert "refused the credentials (401)" in line and "elasticsearch.username and password" in line
    assert wrong not in line


def test_a_password_file_that_cannot_be_read_is_named(tmp_path, secured_opensearch):
    missing = tmp_path / "no-such-password"
    line = _refusal(tmp_path, secured_opensearch, ("ca_certs", str(secured_opensearch.ca_certs)),
                    ("username", secured_opensearch.username), ("password_file", str(missing)))
    assert f"elasticsearch.password_file: cannot read {missing}" in line


def test_a_node_certificate_without_its_ca_names_ca_certs(tmp_path, secured_opensearch):
    """The system's store does not know the node's CA (a self-signed chain, as Elasticsearch 8 makes)."""
    line = _refusal(tmp_path, secured_opensearch, ("username", secured_opensearch.username),
                    ("password_file", str(secured_opensearch.password_file)))
    assert "TLS certificate is not trusted" in line and "elasticsearch.ca_certs" in line


def test_a_wrong_ca_names_ca_certs(tmp_path, secured_opensearch):
    other = _certificate_authority(tmp_path / "other-ca", "other-ca")
    line = _refusal(tmp_path, secured_opensearch, ("ca_certs", str(other)), ("username", secured_opensearch.username),
                    ("password_file", str(secured_opensearch.password_file)))
    assert "TLS certificate is not trusted" in line and "elasticsearch.ca_certs" in line


def test_an_expired_certificate_says_so(tmp_path):
    ca = _certificate_authority(tmp_path / "ca", "test-ca")
    listener = TlsListener(*_expired_certificate(tmp_path / "ca", ca))
    line = _refusal(tmp_path, None, ("ca_certs", str(ca)), url=listener.url)
    assert "TLS certificate has expired" in line and "certificate has expired" in line


def test_a_password_in_the_url_is_refused_before_any_request(tmp_path):
    line = _refusal(tmp_path, None, url="https://kb:hunter2-secret@127.0.0.1:9")
    assert "elasticsearch.hosts: a node URL carries a password" in line and "hunter2-secret" not in line


def test_secrets_stay_out_of_the_config_version_and_its_problems():
    first = parse_config("elasticsearch:\n  username: kb\n  password: first-password\n")
    second = parse_config("elasticsearch:\n  username: kb\n  password: second-password\n")
    assert first.version == second.version  # the version is public: every search answer carries it
    assert "first-password" not in repr(first)
    with pytest.raises(Exception) as refused:
        parse_config("elasticsearch:\n  password: 987654321\n")
    assert "987654321" not in str(refused.value) and "elasticsearch.password" in str(refused.value)


def test_the_environment_wins_over_a_file_which_wins_over_the_config(tmp_path, monkeypatch, clean_environment):
    from kb_service.config import EngineKind
    from kb_service.engines.elastic.dialect import Connection
    from kb_service.runtime import Environment

    secret_file = tmp_path / "api-key"
    secret_file.write_text("from-the-file\n")
    settings = parse_config(f"elasticsearch:\n  api_key_file: {secret_file}\n").elasticsearch
    assert Connection.resolve(EngineKind.ELASTICSEARCH, settings).api_key == "from-the-file"
    monkeypatch.setenv("KB_ES_API_KEY", "from-the-environment")
    monkeypatch.setenv("KB_OS_API_KEY", "for-the-other-engine")
    secrets = Environment.read().cluster_secrets(EngineKind.ELASTICSEARCH)
    assert Connection.resolve(EngineKind.ELASTICSEARCH, settings, secrets).api_key == "from-the-environment"
    inline = parse_config("elasticsearch:\n  api_key: from-the-config\n").elasticsearch
    monkeypatch.delenv("KB_ES_API_KEY")
    secrets = Environment.read().cluster_secrets(EngineKind.ELASTICSEARCH)
    assert Connection.resolve(EngineKind.ELASTICSEARCH, inline, secrets).api_key == "from-the-config"


def test_a_resolved_secret_is_masked_in_every_log_line(clean_environment, caplog):
    import logging

    from kb_service.config import EngineKind
    from kb_service.engines.elastic.dialect import Connection
    from kb_service.logs import OneLineFormatter

    password = "masked-" + uuid.uuid4().hex
    settings = parse_config(f"elasticsearch:\n  username: kb\n  password: {password}\n").elasticsearch
    Connection.resolve(EngineKind.OPENSEARCH, settings)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "a library quoted %s", (password,), None)
    assert OneLineFormatter("%(message)s").format(record) == "a library quoted ***"
