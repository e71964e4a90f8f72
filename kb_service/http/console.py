"""The analyst console: /console shows what the service understood and why each hit ranks where it does
(a stacked bar of its score components), the exact request the engine received, and lets an analyst rate
hits and compare a candidate config with the live one on a query. Server-rendered pages with a little
JavaScript behind the analyst role's key (a browser is asked for it as Basic credentials); candidate configs
are self-contained, never touch the live one, and comparisons are rate-limited per client."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, g, render_template, request

from kb_service.config import ConfigError, Role, ServiceConfig, parse_config
from kb_service.errors import InputError, NotFoundError
from kb_service.evaluation import EvalQuery, evaluate, format_table, query_id, wins_and_losses
from kb_service.feedback.judgments import JUDGED, JudgmentInput, JudgmentStore, Rating
from kb_service.feedback.query_log import PROBLEMS, QueryLog
from kb_service.http.auth import authorise, rate_limited
from kb_service.http.bodies import json_object
from kb_service.serving.service import SearchResponse, SearchService
from kb_service.validation import validated
from scoring.planner import SearchRequest

blueprint = Blueprint("console", __name__, template_folder="templates")
# what a version was built with, and the limits that protect the server: a candidate cannot change them
FIXED_SECTIONS = ("encoder", "engine", "elasticsearch", "search")
CANDIDATE_SECTIONS = ("query_understanding", "scoring")  # what a comparison runs from the candidate
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")


def _service() -> SearchService:
    """The service, once the console is on and the request may see it: the analyst key is needed for every
    POST, and for pages too unless `security.console_open`."""
    service: SearchService = current_app.extensions["kb_service"]
    if not service.config.console.enabled:
        raise NotFoundError("the console is switched off (console.enabled)", "console")
    if request.method != "GET" or not service.config.security.console_open:
        authorise(Role.ANALYST, f"console {request.path}", challenge=True)
    return service


def _bars(response: SearchResponse) -> list[dict]:
    """Each hit with its components as bar segments, widths relative to the largest hit's total."""
    widest = max((sum(abs(c.contribution) for c in hit.components) for hit in response.hits), default=0.0) or 1.0
    names = sorted({c.name for hit in response.hits for c in hit.components})
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    rows = []
    for rank, hit in enumerate(response.hits, start=1):
        segments = [{"name": c.name, "stage": c.stage, "raw": c.raw, "weight": c.weight,
                     "contribution": c.contribution, "colour": colours[c.name],
                     "width": round(100 * abs(c.contribution) / widest, 2)} for c in hit.components]
        rows.append({"rank": rank, "hit": hit, "segments": segments})
    return rows


def _candidate(text: str, live: ServiceConfig) -> ServiceConfig:
    """A pasted config, self-contained but for `extends:` of the live config by its file name (nothing else
    a request sends names a file). Its understanding and scoring sections run over the served version; the
    encoder and engine shape that version and the search limits protect the server, so none of them can
    differ, and the rest (server, security, data directory) is the live process's."""
    live_path = Path(live.source)
    candidate = parse_config(text, "candidate.yaml", bases={live_path.name: live_path})
    fixed = [name for name in FIXED_SECTIONS if getattr(candidate, name) != getattr(live, name)]
    if fixed:
        raise InputError(f"{', '.join(fixed)} cannot differ from the live config in a comparison "
                         "(they shape the index or bound the server's work)", "config")
    return replace(live, **{name: getattr(candidate, name) for name in CANDIDATE_SECTIONS},
                   version=candidate.version, source=candidate.source)


@blueprint.get("/console")
def console():
    service = _service()
    query = request.args.get("q", "").strip()
    context: dict[str, Any] = {"query": query, "response": None, "bars": [], "engine_request": None, "problems": []}
    try:
        response = service.search(SearchRequest(query=query, size=10, explain=True)) if query else None
    except InputError as err:  # a person typed it: say so on the page rather than answer a JSON 400
        context["problems"] = [str(err)]
        response = None
    if response:
        context.update(response=response, bars=_bars(response), parsed=response.parsed,
                       required_evidence=service.config.scoring.category_required_evidence,
                       engine_request=json.dumps(service.engine_request(response), ensure_ascii=False, indent=1))
    return render_template("console.html", **context)


def _ranked_kids(service: SearchService, config: ServiceConfig | None, query: str) -> list[str]:
    """The kids `config` (None: the live config) ranks for `query`, for comparing judged rankings."""
    return [h.record.kid for h in service.search(SearchRequest(query=query, size=100), config=config).hits]


@blueprint.route("/console/compare", methods=["GET", "POST"])
def compare():
    service = _service()
    live_config = service.config
    query = (request.form.get("q") or request.args.get("q") or "").strip()
    text = request.form.get("config", "")
    context: dict[str, Any] = {"query": query,
                               "config_text": text or f"extends: {Path(live_config.source).name}\nscoring:\n",
               "problems": [], "live": None, "candidate": None}
    if request.method == "POST":
        rate_limited("compare", service.config.security.compares_per_minute)
    if request.method == "POST" and query:
        try:
            candidate_config = _candidate(text, live_config)
            live = service.search(SearchRequest(query=query, size=10))
            candidate = service.search(SearchRequest(query=query, size=10), config=candidate_config)
        except ConfigError as err:
            context["problems"] = err.problems
        except InputError as err:  # the candidate's settings, or a query with nothing to search
            context["problems"] = [str(err)]
        else:
            live_ranks = {hit.record.kid: rank for rank, hit in enumerate(live.hits, start=1)}
            moves = {}
            for rank, hit in enumerate(candidate.hits, start=1):
                before = live_ranks.get(hit.record.kid)
                moves[hit.record.kid] = "new" if before is None else (before - rank)
            context.update(live=live, candidate=candidate, moves=moves, candidate_version=candidate_config.version)
    if request.method == "POST" and request.form.get("judged") and not context["problems"]:
        context.update(_judged_comparison(service, text, live_config))
    return render_template("compare.html", **context), 400 if context["problems"] else 200


def _judged_comparison(service: SearchService, text: str, live_config: ServiceConfig) -> dict:
    """Live vs candidate on every query of the judgment list: the `kb eval` table and the queries each wins
    and loses (nDCG@10), each loss a link into the side-by-side view."""
    try:
        candidate_config = _candidate(text, live_config)
    except (ConfigError, InputError) as err:
        return {"problems": getattr(err, "problems", None) or [str(err)]}
    store: JudgmentStore = current_app.extensions["kb_judgments"]
    ratings = store.judgments()
    if not ratings:
        return {"problems": ["the judgment list is empty: rate some hits first (or `kb judgments import`)"]}
    qrels: dict[str, dict[str, int]] = {}
    for rating in ratings:
        qrels.setdefault(query_id(rating.query, JUDGED), {})[rating.kid] = rating.grade
    queries = [EvalQuery(query_id(q, JUDGED), JUDGED, q) for q in dict.fromkeys(r.query for r in ratings)]
    runs = []
    for label, config in (("live", None), ("candidate", candidate_config)):
        runs.append(evaluate(queries, qrels, functools.partial(_ranked_kids, service, config), label))
    wins, losses = wins_and_losses(runs[0], runs[1])
    texts = {q.qid: q.text for q in queries}
    return {"table": format_table(runs), "wins": [texts[q] for q in wins], "losses": [texts[q] for q in losses],
            "judged_queries": len(queries)}


@blueprint.get("/console/insights")
def insights():
    """Frequent queries the service understood poorly, per problem: what to add to the KB or the synonyms."""
    _service()
    log: QueryLog = current_app.extensions["kb_query_log"]
    log.flush(timeout_s=1.0)  # this worker's searches so far are in the tally the page shows
    return render_template("insights.html", lists={problem: log.frequent(problem) for problem in PROBLEMS})


@blueprint.post("/console/judgments")
def rate():
    service = _service()
    body = validated(JudgmentInput, json_object(required=True))
    state = service.state
    rating = Rating(body.query, body.kid, body.grade, g.key_id, time.time(), state.config.version, state.version.name)
    store: JudgmentStore = current_app.extensions["kb_judgments"]
    store.rate(rating)
    return {"rated": {"query": rating.query, "kid": rating.kid, "grade": rating.grade, "rater": rating.rater}}, 201
