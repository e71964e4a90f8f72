"""Implicit feedback: search responses carry a query_id, POST /events takes the front end's impressions and
clicks, and `kb judgments from-events` turns them into graded qrels with a position-bias click model.

The clicks are synthetic with a known bias: users examine rank k with probability 2^-(k-1), and click an examined
hit with its planted attractiveness. Raw click-through would favour whatever was shown first; the recovered
grades must follow the planted order instead.
"""

from __future__ import annotations

import random

import pytest

from kb_service.cli.main import main
from kb_service.evaluation import read_queries
from kb_service.feedback.click_model import fit_pbm, judgments_from_events
from kb_service.feedback.events import parse_events
from kb_service.http.app import create_app
from kb_service.runtime import Runtime
from tests.conftest import loaded, make_config

PLANTED = {"doc-a": 0.9, "doc-b": 0.55, "doc-c": 0.3, "doc-d": 0.12, "doc-e": 0.02}  # attractiveness


def _sessions(query: str, rng: random.Random, count: int) -> list[dict]:
    """Events of `count` searches that show the five docs in an order biased towards the worst first (so raw
    click rates mislead), each examined at rank k with probability 2^-(k-1)."""
    events = []
    for n in range(count):
        order = sorted(PLANTED, key=lambda d: PLANTED[d] + rng.uniform(0, 0.6))  # mostly worst first
        query_id = f"{query}-{n}"
        for rank, kid in enumerate(order, start=1):
            events.append({"query_id": query_id, "query": query, "kid": kid, "position": rank,
                           "action": "impression", "timestamp": 1_700_000_000 + n})
            if rng.random() < 0.5 ** (rank - 1) and rng.random() < PLANTED[kid]:
                events.append({"query_id": query_id, "kid": kid, "position": rank, "action": "click"})
    return events


def test_the_click_model_recovers_the_planted_order_despite_position_bias():
    rng = random.Random(7)
    raw = _sessions("best kettle", rng, 900)
    events = [e for start in range(0, len(raw), 1000) for e in parse_events(raw[start:start + 1000])]
    raw_ctr = {}
    for kid in PLANTED:
        shown = sum(e.action == "impression" and e.kid == kid for e in events)
        raw_ctr[kid] = sum(e.action == "click" and e.kid == kid for e in events) / shown
    assert sorted(raw_ctr, key=raw_ctr.get, reverse=True) != list(PLANTED), "the bias must mislead raw CTR"
    judgments = {j.kid: j for j in judgments_from_events(events, min_impressions=10)}
    assert sorted(judgments, key=lambda k: judgments[k].attractiveness, reverse=True) == list(PLANTED)
    grades = [judgments[k].grade for k in PLANTED]
    assert grades == sorted(grades, reverse=True) and grades[0] == 3 and grades[-1] == 0, grades
    theta, _ = fit_pbm([("q", e.kid, e.position, False) for e in events if e.action == "impression"][:10])
    assert theta[1] == 1.0


def test_too_little_evidence_gives_no_judgment():
    events = parse_events(_sessions("rare query", random.Random(1), 3))
    assert judgments_from_events(events, min_impressions=10) == []


@pytest.mark.parametrize("event, field", [
    ({"kid": "x", "position": 1, "action": "click"}, "events[0].query_id"),
    ({"query_id": "q", "kid": "x", "position": 0, "action": "click"}, "events[0].position"),
    ({"query_id": "q", "kid": "x", "position": 1, "action": "hover"}, "events[0].action"),
    ({"query_id": "q", "kid": "x", "position": 1, "action": "click", "timestamp": "now"}, "events[0].timestamp"),
])
def test_bad_events_are_refused_naming_the_field(capital_service, event, field):
    client = create_app(capital_service.runtime, service=capital_service, watch=False).test_client()
    response = client.post("/events", json={"events": [event]})
    assert response.status_code == 400 and response.get_json()["error"]["field"] == field


def test_search_ids_events_and_judgments_end_to_end(tmp_path, capital_kb_file, monkeypatch, capsys):
    """A search answers with a query_id; the front end posts impressions and clicks under it; the CLI writes
    qrels and queries that `kb eval` reads, graded in the planted order."""
    data_dir = loaded(tmp_path / "data", capital_kb_file)
    client = create_app(Runtime(make_config(data_dir)), watch=False).test_client()
    answer = client.get("/search", query_string={"q": "哥伦比亚的首都"}).get_json()
    assert len(answer["query_id"]) == 32 and answer["hits"]
    sessions = _sessions("哥伦比亚的首都", random.Random(3), 400)
    for start in range(0, len(sessions), 1000):
        assert client.post("/events", json={"events": sessions[start:start + 1000]}).status_code == 202
    monkeypatch.setenv("KB_DATA_DIR", str(data_dir))
    qrels, queries = tmp_path / "clicks.qrels", tmp_path / "clicks.jsonl"
    assert main(["judgments", "from-events", "--qrels", str(qrels), "--queries", str(queries)]) == 0
    assert "5 judgments for 1 queries" in capsys.readouterr().out
    graded = {kid: int(grade) for _, _, kid, grade in (line.split() for line in qrels.read_text().splitlines())}
    assert sorted(graded, key=graded.get, reverse=True)[:2] == ["doc-a", "doc-b"] and graded["doc-e"] == 0
    assert [(q.task, q.text) for q in read_queries(queries)] == [("clicks", "哥伦比亚的首都")]
