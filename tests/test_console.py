"""The analyst console: in process for its contract, and in a real browser (Debian's Chromium, driven headless
by playwright, against a real `kb serve`) for what an analyst does: search, read the parsed query and the
score bars, rate a hit, compare a candidate config. KB_CONSOLE_SCREENSHOTS names a folder to keep the
screenshots in (docs/ holds the committed ones)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from kb_service.cli.main import main
from kb_service.http.app import create_app
from kb_service.http.auth import new_key
from kb_service.runtime import Runtime
from tests.conftest import config_text, loaded, make_config, running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CANDIDATE = "extends: config.yaml\nscoring:\n  boosts:\n    knowledge_term: 0\n    knowledge_phrase: 0\n"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, capital_kb_file):
    """A data directory serving the capital KB and a config file with a known analyst key."""
    workdir = tmp_path_factory.mktemp("console")
    key, digest = new_key()
    config_path = workdir / "config.yaml"
    config_path.write_text(config_text(_analyst_key(digest)), encoding="utf-8")
    return workdir, loaded(workdir / "data", capital_kb_file), config_path, key, digest


def _analyst_key(digest: str) -> tuple[str, str]:
    """The config replacement that names the analyst key."""
    return "  analyst_key_sha256: []", f"  analyst_key_sha256: [{digest}]"


def _client(keyed, *replacements, with_key: bool = True):
    """A test client of the app over the keyed data directory; it presents the analyst key unless told not."""
    _, data_dir, _, key, digest = keyed
    client = create_app(Runtime(make_config(data_dir, _analyst_key(digest), *replacements)), watch=False).test_client()
    if with_key:
        client.environ_base["HTTP_X_API_KEY"] = key
    return client, key


def test_the_console_shows_links_bars_and_the_plan(keyed):
    client, _ = _client(keyed)
    page = client.get("/console", query_string={"q": "哥伦比亚的首都"}).get_data(as_text=True)
    assert 'id="intent">attribute_lookup' in page and "哥伦比亚" in page and "首都" in page
    assert page.count('class="hit"') >= 3 and page.count('class="segment"') >= 3
    assert re.search(r'title="engine \S+: [-\d.e]+ × [-\d.e]+ = [-\d.e]+"', page), "hover shows raw × weight"
    assert "runs the plan in process" in page  # the embedded engine sends no request
    # 哥伦比亚 is linked, so its category may restrict the hits: shown as named evidence, not as a weak guess
    named = re.search(r'<span class="link"\s+title="named evidence ([\d.]+)', page)
    assert named and float(named.group(1)) >= 0.5


def test_compare_runs_the_candidate_beside_the_live_config_and_reports_problems(keyed):
    client, _ = _client(keyed)
    compared = client.post("/console/compare", data={"q": "哥伦比亚的首都", "config": CANDIDATE}).get_data(as_text=True)
    assert 'id="live"' in compared and 'id="candidate"' in compared
    assert re.search(r'class="move (up|down|new)"', compared), "the candidate moves some hit"
    broken = client.post("/console/compare", data={"q": "杭州", "config": "scoring:\n  mode: warp\n"})
    assert "candidate.yaml:2: scoring.mode" in broken.get_data(as_text=True)
    encoder = "encoder:\n  provider: sentence-transformers\n"
    frozen = client.post("/console/compare", data={"q": "杭州", "config": encoder})
    assert "encoder cannot differ" in frozen.get_data(as_text=True)


def test_rating_needs_the_key_and_exports_as_qrels(keyed, tmp_path, monkeypatch):
    client, key = _client(keyed, with_key=False)
    body = {"query": "哥伦比亚的首都", "kid": "geo:country:CO:首都", "grade": 3}
    assert client.post("/console/judgments", json=body).status_code == 401
    assert client.post("/console/judgments", json={**body, "grade": 7}, headers={"X-API-Key": key}).status_code == 400
    assert client.post("/console/judgments", json=body, headers={"X-API-Key": key}).status_code == 201
    monkeypatch.setenv("KB_DATA_DIR", str(keyed[1]))
    qrels = tmp_path / "judged.tsv"
    assert main(["judgments", "export", "--qrels", str(qrels), "--queries", str(tmp_path / "judged.jsonl")]) == 0
    assert any(line.endswith(" 0 geo:country:CO:首都 3") for line in qrels.read_text().splitlines())


def test_the_console_can_be_switched_off(keyed):
    client, _ = _client(keyed, ("console:\n  enabled: true", "console:\n  enabled: false"))
    assert client.get("/console").status_code == 404


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
def test_an_analyst_uses_the_console_in_a_real_browser(keyed):
    from playwright.sync_api import sync_playwright

    workdir, data_dir, config_path, key, _ = keyed
    shots = Path(os.environ.get("KB_CONSOLE_SCREENSHOTS") or tempfile.mkdtemp(prefix="console-shots-"))
    shots.mkdir(parents=True, exist_ok=True)
    with running_server(workdir, data_dir, config_path) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        # the console asks a browser for the analyst key as Basic credentials (any user name)
        page = browser.new_page(viewport={"width": 1200, "height": 900},
                                http_credentials={"username": "analyst", "password": key})
        page.goto(f"{base}/console")
        page.fill("#q", "哥伦比亚的首都")
        page.click("#search")
        page.wait_for_selector("#hits .segment")
        assert page.inner_text("#intent") == "attribute_lookup"
        assert "哥伦比亚" in page.inner_text("#parsed") and "首都" in page.inner_text("#parsed")
        assert page.locator("#hits tr.hit").count() >= 3 and page.locator("#hits .segment").count() >= 3
        page.screenshot(path=str(shots / "console-search.png"), full_page=True)
        first = page.locator("#hits tr.hit").first
        first.locator("button[data-grade='3']").click()
        # the page's script runs under its own CSP nonce (a wait_for_function string would be eval, which the CSP
        # forbids, so the wait is a selector)
        page.wait_for_selector("#hits tr.hit .rated:not(:empty)")
        assert first.locator(".rated").inner_text() == "rated 3"
        page.goto(f"{base}/console/compare?q=哥伦比亚的首都")
        page.fill("#config", CANDIDATE)
        page.click("#compare")
        page.wait_for_selector("#candidate li")
        assert page.locator("#live li").count() >= 3 and page.locator(".move").count() >= 1
        page.screenshot(path=str(shots / "console-compare.png"), full_page=True)
        browser.close()


def test_compare_on_the_judgment_list_shows_the_eval_table_and_the_losses(keyed):
    client, key = _client(keyed)
    for kid, grade in (("geo:country:CO:首都", 3), ("geo:city:3688689:国家", 2)):
        assert client.post("/console/judgments", json={"query": "哥伦比亚的首都", "kid": kid, "grade": grade},
                           headers={"X-API-Key": key}).status_code == 201
    page = client.post("/console/compare", data={"q": "哥伦比亚的首都", "config": CANDIDATE, "judged": "1"}
                       ).get_data(as_text=True)
    assert 'id="judged-table"' in page and "| judged (n=" in page and "nDCG@10" in page
    assert re.search(r"candidate better on \d+, worse on \d+", page)


def test_insights_list_frequent_poorly_understood_queries(keyed):
    client, _ = _client(keyed)
    for query in ("今天天气怎么样", "今天天气怎么样", "哥伦比亚的首都"):
        assert client.get("/search", query_string={"q": query}).status_code == 200
    page = client.get("/console/insights").get_data(as_text=True)
    no_entity = page.split('data-problem="no entity"')[1].split("</table>")[0]
    assert "今天天气怎么样" in no_entity and "2 of 2 searches" in no_entity and "哥伦比亚的首都" not in no_entity
