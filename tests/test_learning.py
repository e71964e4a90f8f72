"""Understanding that learns from use: synthetic users (tests/click_simulation.py) ask a KB made here in
wordings no list holds; `kb suggest-understanding` mines phrasings from their clicks, an analyst approves or
rejects them, and the next version built carries the approved ones, for entities no session was about."""

import json

from kb_service.feedback.events import EventStore
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from kb_service.state import open_state
from tests.click_simulation import sessions
from tests.conftest import loaded, make_config
from tests.kb_shapes import poems, write_jsonl
from tests.test_cli import run_kb


def _top_attribute(service: SearchService, text: str) -> str | None:
    attributes = service.understand(text).attributes
    return attributes[0].name if attributes else None


def test_phrasings_mined_from_clicks_apply_after_approval_and_the_next_reload(tmp_path):
    records, questions = poems()
    entities = sorted({entity for _, _, entity in questions})
    asked, unseen = entities[:6], entities[-1]
    kb = write_jsonl(records, tmp_path / "kb.jsonl")
    config = make_config(loaded(tmp_path / "data", kb))
    service = SearchService(Runtime(config))
    assert _top_attribute(service, f"{unseen}这几个字怎么念") != "读音", "the wording is not understood yet"
    EventStore(open_state(config, "events")).add(sessions(service, [q for q in questions if q[2] in asked], 12))

    mined = run_kb("suggest-understanding", "--json", data_dir=tmp_path / "data")
    assert mined.returncode == 0, mined.stderr
    proposals = {(p["kind"], p["text"], p["target"]): p for p in json.loads(mined.stdout)}
    wanted = proposals[("phrasing", "这几个字怎么念", "读音")]
    assert wanted["queries"] >= 3 and wanted["clicks"] > 0 and wanted["grade"] == 3.0 and wanted["status"] == "pending"
    other = next(p for key, p in proposals.items() if key[1] != "这几个字怎么念")

    unknown = run_kb("suggest-understanding", "--approve", "nosuchid", "--reviewer", "ana", data_dir=tmp_path / "data")
    assert unknown.returncode == 2 and "no proposal with id nosuchid" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    decided = run_kb("suggest-understanding", "--approve", wanted["id"], "--reject", other["id"], "--reviewer", "ana",
                     data_dir=tmp_path / "data")
    assert decided.returncode == 0 and "approved 1" in decided.stdout and "rejected 1" in decided.stdout

    again = run_kb("suggest-understanding", "--json", data_dir=tmp_path / "data")
    assert wanted["id"] not in {p["id"] for p in json.loads(again.stdout)}, "a decided proposal is not reopened"
    approved = json.loads(run_kb("suggest-understanding", "--status", "approved", "--json",
                                 data_dir=tmp_path / "data").stdout)
    assert [p["id"] for p in approved] == [wanted["id"]]

    service.refresh()
    assert _top_attribute(service, f"{unseen}这几个字怎么念") != "读音", "approval alone changes nothing served"
    loaded(tmp_path / "data", kb)  # the next reload builds the approved phrasing in
    service = SearchService(Runtime(config))
    learned = service.state.version.dictionary.learned_phrasings
    assert learned == {"读音": ["这几个字怎么念"]}, "only the approved proposal is built in"
    assert _top_attribute(service, f"{unseen}这几个字怎么念") == "读音"
