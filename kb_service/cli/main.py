"""The `kb` command: a thin layer over the same functions the HTTP API calls."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from kb_service import logs
from kb_service.config import LogFormat, Role
from kb_service.errors import KbError
from kb_service.reload.review import ReviewStatus
from kb_service.runtime import Runtime
from scoring.plan import Mode

log = logging.getLogger("kb")


def _print_json(value) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


def cmd_load(runtime: Runtime, args) -> int:
    from kb_service.ingest.loading import load_files

    report = load_files(runtime, args.files, quarantine=args.quarantine, reject_file=args.reject_file)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(f"loaded {report.records} records into version {report.version} in {report.seconds:.1f}s "
              f"({report.records_per_second:,.0f} records/s; encoded {report.encoded}, reused {report.reused} "
              f"from cache; index {report.index_bytes / 2**20:.1f} MiB)")
        if report.rejected:
            print(f"quarantined {report.rejected} bad line(s) to {report.reject_file}")
    return 0


def cmd_demo(runtime: Runtime, args) -> int:
    from kb_service.ingest.demo import write_demo_file

    if args.if_missing and runtime.engine.current_name():
        print("an index version is already served; not rebuilding the demo (drop --if-missing to rebuild)")
        return 0
    path = runtime.paths.demo_kb
    count = write_demo_file(path, min_population=args.min_population)
    print(f"wrote {count} demo records (GeoNames, CC BY 4.0) to {path}")
    args.files, args.quarantine, args.reject_file = [str(path)], False, None
    return cmd_load(runtime, args)


def cmd_search(runtime: Runtime, args) -> int:
    from kb_service.http.shaping import search_body
    from kb_service.serving.request import parse_search
    from kb_service.serving.service import SearchService

    service = SearchService(runtime)
    params = {"q": args.query, "size": args.size, "from": args.offset, "explain": args.explain}
    if args.category:
        params["category"] = args.category
    if args.mode:
        params["mode"] = args.mode
    request, shape = parse_search(params, runtime.config)
    response = search_body(service.search(request), request.offset, request.explain, shape)
    if args.json:
        _print_json(response)
        return 0
    print(f"{response['total']} candidates, {response['took_ms']} ms, index {response['index_version']}, "
          f"config {response['config_version']}")
    for hit in response["hits"]:
        components = " ".join(f"{name}={value:.3f}" for name, value in hit["components"].items())
        print(f"{hit['rank']:>3}. {hit['score']:.4f}  {hit['knowledge']} / {hit['attribute']}: "
              f"{hit['value'][:60]}  [{hit['kid']}]  {components}")
    return 0


def cmd_serve(runtime: Runtime, args) -> int:
    from kb_service.process import serve

    serve(runtime, host=args.host, port=args.port, workers=args.workers)
    return 0


def cmd_versions(runtime: Runtime, args) -> int:
    versions = runtime.engine.versions()
    if args.json:
        _print_json([{"name": v.name, "current": v.current, **v.manifest} for v in versions])
        return 0
    for version in versions:
        marker = "*" if version.current else " "
        print(f"{marker} {version.name}  {version.manifest.get('records', '?')} records  "
              f"{version.manifest.get('encoder', '')}  {version.manifest.get('source', '')}")
    return 0


def cmd_rollback(runtime: Runtime, args) -> int:
    from kb_service.reload.run import rollback

    done = rollback(runtime, args.version)
    print(f"serving {done.serving} (was {done.previous}); running servers switch within a second")
    return 0


def _print_run(run) -> None:
    counts = run.counts
    print(f"reload {run.id} ({run.trigger}) {run.status} at {run.started}, {run.duration_s or 0:.1f}s, version "
          f"{run.version or '-'}: {counts.records} records, +{counts.added} ~{counts.updated} -{counts.removed}, "
          f"merged {counts.merged}, rejected {counts.rejected}, expired {counts.expired}, encoded {counts.encoded} "
          f"(reused {counts.reused})")
    for gate in run.gates:
        print(f"   {'pass' if gate.passed else 'FAIL'}  {gate.gate}: {gate.detail}")
    if run.message:
        print(f"   {run.message}")


def cmd_reload(runtime: Runtime, args) -> int:
    from kb_service.reload.run import ReloadRefusedError, run_reload

    try:
        run = run_reload(runtime, trigger="cli", force=args.force)
    except ReloadRefusedError as err:
        _print_json(err.run.to_dict()) if args.json else _print_run(err.run)
        raise
    _print_json(run.to_dict()) if args.json else _print_run(run)
    return 0


def cmd_reloads(runtime: Runtime, args) -> int:
    from kb_service.reload.run import history_of

    runs = history_of(runtime).runs(args.limit)
    if args.json:
        _print_json([run.to_dict() for run in runs])
        return 0
    for run in runs:
        _print_run(run)
    return 0


def cmd_schedule(runtime: Runtime, args) -> int:
    from kb_service.reload.apart import reload_apart
    from kb_service.reload.schedule import build_scheduler

    config = runtime.config
    scheduler = build_scheduler(runtime, blocking=True, reload=reload_apart)
    if scheduler is None:
        print("kb: no schedule: set reload.cron or reload.interval_minutes in the config", file=sys.stderr)
        return 2
    print(f"running scheduled reloads ({config.reload.cron or f'every {config.reload.interval_minutes} min'})")
    scheduler.start()
    return 0


def cmd_review(runtime: Runtime, args) -> int:
    from kb_service.ingest.readers import read_records
    from kb_service.reload.review import ReviewDatabase, ReviewStatus

    database = ReviewDatabase(runtime.config.reload.database_url(runtime.paths))
    try:
        if args.action == "import":
            result = read_records(args.files)
            status = ReviewStatus.APPROVED if args.approve else ReviewStatus.PENDING
            report = database.import_records(result.records, status=status, reviewer=args.reviewer)
            print(f"imported {len(result.records)} records as {status}: {report.inserted} new, {report.changed} "
                  f"changed, {report.unchanged} unchanged")
        elif args.action == "backup":
            print(f"backed up {database.backup(args.file)} records to {args.file}")
        elif args.action == "restore":
            print(f"restored {database.restore(args.file)} records from {args.file}; `kb reload` serves them")
        elif args.action == "list":
            counts = database.counts()
            print(", ".join(f"{status}: {count}" for status, count in counts.items()))
            for row in database.listing(args.status, args.limit):
                print(f"  [{row['status']}] {row['kid']}  {row['knowledge']} / {row['attribute']}: "
                      f"{row['value'][:50]}  {row['reviewer'] or ''}")
        else:
            if not args.kids and not args.all_pending:
                print("kb: name the kids to review, or --all-pending", file=sys.stderr)
                return 2
            status = ReviewStatus.APPROVED if args.action == "approve" else ReviewStatus.REJECTED
            changed = database.set_status(None if args.all_pending else args.kids, status, args.reviewer)
            print(f"{status} {changed} record(s) as {args.reviewer}")
    finally:
        database.close()
    return 0


def cmd_eval(runtime: Runtime, args) -> int:
    from kb_service.evaluation import (
        comparison,
        evaluate_rankings,
        format_table,
        rank_judged,
        read_qrels,
        read_queries,
        read_run,
        wins_and_losses,
        write_run,
    )
    from kb_service.serving.service import SearchService
    from scoring.planner import SearchRequest

    queries = read_queries(args.queries)
    qrels = read_qrels(args.qrels)
    runs = [evaluate_rankings(queries, qrels, read_run(path), path) for path in args.runs or ()]
    for parts in [runtime.with_config(runtime.read_config(path)) for path in args.configs or ()] or [runtime]:
        run_config = parts.config
        service = SearchService(parts)

        def rank(text: str, service=service) -> list[str]:
            response = service.search(SearchRequest(query=text, size=100, mode=args.mode))
            return [hit.record.kid for hit in response.hits]

        rankings = rank_judged(queries, qrels, rank)
        if args.save_runs:
            Path(args.save_runs).mkdir(parents=True, exist_ok=True)
            write_run(Path(args.save_runs) / f"{Path(run_config.source).stem}.run", rankings,
                      Path(run_config.source).stem)
        runs.append(evaluate_rankings(queries, qrels, rankings, run_config.source))
        parts.close()  # the command's own runtime closes twice, which is harmless
    if args.json:
        _print_json([{"config": run.label, "tasks": [t.__dict__ for t in run.tasks], "per_query": run.per_query,
                      **({"versus_first": comparison(runs[0], run)} if index else {})}
                     for index, run in enumerate(runs)])
        return 0
    print(format_table(runs))
    for other in runs[1:]:
        wins, losses = wins_and_losses(runs[0], other)
        print(f"\n{other.label} vs {runs[0].label}: {len(wins)} queries better, {len(losses)} worse (nDCG@10)")
        for label, ids in (("better", wins), ("worse", losses)):
            if ids:
                print(f"  {label}: " + ", ".join(ids[:10]) + (" …" if len(ids) > 10 else ""))
    return 0


def cmd_judgments(runtime: Runtime, args) -> int:
    from kb_service.evaluation import write_judgments
    from kb_service.feedback.click_model import judgments_from_events
    from kb_service.feedback.events import EventStore
    from kb_service.feedback.judgments import JudgmentStore

    if args.action in ("export", "import"):
        judged = JudgmentStore(runtime.state("judgments"))
        if args.action == "export":
            count = judged.export(Path(args.qrels), Path(args.queries) if args.queries else None)
            print(f"{count} judgments → {args.qrels}")
        else:
            count = judged.import_qrels(Path(args.qrels), Path(args.queries), args.rater)
            print(f"{count} judgments imported from {args.qrels}")
        return 0

    events = EventStore(runtime.state("events"), runtime.config.feedback.max_events).all()
    judgments = judgments_from_events(events, args.min_impressions)
    write_judgments(args.qrels, args.queries, [(j.query, j.kid, j.grade) for j in judgments], "clicks")
    queries = {j.query for j in judgments}
    print(f"{len(judgments)} judgments for {len(queries)} queries from {len(events)} events "
          f"(pairs shown fewer than {args.min_impressions} times left out) → {args.qrels}")
    return 0


def cmd_suggest_understanding(runtime: Runtime, args) -> int:
    from kb_service.feedback.click_model import judgments_from_events
    from kb_service.feedback.events import EventStore
    from kb_service.feedback.learning import ProposalStore, mine
    from kb_service.serving.service import SearchService

    store = ProposalStore(runtime.state("proposals"))
    for status, ids in (("approved", args.approve), ("rejected", args.reject)):
        if ids:
            print(f"{status} {store.decide(ids, status, args.reviewer)} proposal(s) as {args.reviewer}; "
                  "they apply from the next reload")
    if not (args.approve or args.reject or args.status):
        events = EventStore(runtime.state("events"), runtime.config.feedback.max_events).all()
        judgments = judgments_from_events(events, args.min_impressions)
        service = SearchService(runtime)
        mined = mine(judgments, service.understand, service.get, args.min_queries)
        print(f"{len(mined)} proposals from {len(judgments)} judgments of {len(events)} events "
              f"({store.save(mined)} new or pending)", file=sys.stderr)
    listed = store.list(args.status or "pending")
    if args.json:
        _print_json([{"id": p.id, **dataclasses.asdict(p)} for p in listed])
        return 0
    print("| id | kind | text | → | queries | clicks | grade | e.g. | status |\n|---|---|---|---|---|---|---|---|---|")
    for p in listed:
        print(f"| {p.id} | {p.kind} | {p.text} | {p.target} | {p.queries} | {p.clicks} | {p.grade} | "
              f"{'; '.join(p.examples[:2])} | {p.status} |")
    return 0


def cmd_tune(runtime: Runtime, args) -> int:
    from kb_service.config import read_raw
    from kb_service.errors import InputError
    from kb_service.evaluation import read_qrels, read_queries
    from kb_service.tuning import changed_weights, cross_validate, overlay

    config = runtime.config
    out = Path(args.out).resolve()
    if out == Path(config.source).resolve():
        raise InputError(f"{args.out} is the config being tuned; name another file for the overlay", "out")
    queries, qrels = read_queries(args.queries), read_qrels(args.qrels)
    result = cross_validate(runtime, queries, qrels, args.folds, args.rounds,
                            lambda line: print(line, file=sys.stderr))
    print("| fold | training queries | held-out queries | default nDCG@10 | tuned nDCG@10 | changed |")
    print("|---|---|---|---|---|---|")
    for fold, train, held, default, best, changes in result.folds:
        print(f"| {fold} | {train} | {held} | {default:.4f} | {best:.4f} | {'; '.join(changes) or '-'} |")
    mean = [sum(r[i] for r in result.folds) / len(result.folds) for i in (3, 4)]
    print(f"| mean | | | {mean[0]:.4f} | {mean[1]:.4f} | |")
    print("\n| task (held out) | queries | default nDCG@10 | tuned nDCG@10 | p (paired randomisation) |")
    print("|---|---|---|---|---|")
    for task, count, default, best, p in result.tasks:
        print(f"| {task} | {count} | {default:.4f} | {best:.4f} | {p:.3g} |")
    raw = read_raw(config.source)
    out.write_text(overlay(Path(config.source), raw, result.tuned), encoding="utf-8")
    print(f"tuned on all {len(queries)} queries: {'; '.join(changed_weights(raw, result.tuned)) or 'no change'} "
          f"→ {out}")
    return 0


def cmd_key(runtime: Runtime, args) -> int:
    from kb_service.http.auth import new_key

    key, digest = new_key()
    print(f"API key (give it to its holder, it is not stored): {key}")
    print(f"add to config.yaml under security.{args.role}_key_sha256 (a config reload applies it): {digest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kb", description="Knowledge-base retrieval with hybrid scoring.")
    parser.add_argument("--config", help="config file (default: $KB_CONFIG, else the bundled config.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    load = commands.add_parser("load", help="build a new index version from knowledge files and serve it")
    load.add_argument("files", nargs="+", help="JSONL or CSV files, optionally .gz")
    load.add_argument("--quarantine", action="store_true", help="set bad lines aside instead of failing")
    load.add_argument("--reject-file", help="where quarantined lines go (default: under the data directory)")
    load.add_argument("--json", action="store_true", help="print the load report as JSON")
    load.set_defaults(handler=cmd_load)

    demo = commands.add_parser("demo", help="build and load the demo KB (GeoNames cities with Chinese names)")
    demo.add_argument("--min-population", type=int, default=100_000)
    demo.add_argument("--if-missing", action="store_true", help="do nothing when a version is already served")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(handler=cmd_demo)

    search = commands.add_parser("search", help="search the served version and print ranked hits")
    search.add_argument("query")
    search.add_argument("--size", type=int, default=10)
    search.add_argument("--from", dest="offset", type=int, default=0)
    search.add_argument("--category", help="comma-separated categories to filter on")
    search.add_argument("--mode", choices=[mode.value for mode in Mode])
    search.add_argument("--explain", action="store_true", help="show every score component")
    search.add_argument("--json", action="store_true")
    search.set_defaults(handler=cmd_search)

    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="worker processes sharing one index (default: server.workers; "
                       "0 = one per CPU core)")
    serve.set_defaults(handler=cmd_serve)

    evaluation = commands.add_parser("eval", help="relevance of one or more configs on judged queries")
    evaluation.add_argument("--queries", required=True, help="JSONL: qid, task, query")
    evaluation.add_argument("--qrels", required=True, help="TREC qrels: qid 0 kid grade")
    evaluation.add_argument("--config", dest="configs", action="append", help="a config to compare (repeatable)")
    evaluation.add_argument("--run", dest="runs", action="append",
                            help="a saved TREC run to compare, listed before the configs (repeatable)")
    evaluation.add_argument("--save-runs", metavar="DIR", help="write each config's rankings as DIR/<config>.run")
    evaluation.add_argument("--mode", choices=[mode.value for mode in Mode])
    evaluation.add_argument("--json", action="store_true")
    evaluation.set_defaults(handler=cmd_eval)

    key = commands.add_parser("key", help="make an API key for a role and the digest to configure")
    key.add_argument("--role", choices=[role.value for role in Role], default=Role.ADMIN.value)
    key.set_defaults(handler=cmd_key)

    reload = commands.add_parser("reload", help="gated reload from the review database (or reload.files)")
    reload.add_argument("--force", action="store_true", help="switch even when a gate refuses")
    reload.add_argument("--json", action="store_true")
    reload.set_defaults(handler=cmd_reload)

    reloads = commands.add_parser("reloads", help="the reload history, newest first")
    reloads.add_argument("--limit", type=int, default=20)
    reloads.add_argument("--json", action="store_true")
    reloads.set_defaults(handler=cmd_reloads)

    schedule = commands.add_parser("schedule", help="run the configured reload schedule in the foreground")
    schedule.set_defaults(handler=cmd_schedule)

    review = commands.add_parser("review", help="the review database: import, list, approve, reject")
    actions = review.add_subparsers(dest="action", required=True)
    review_import = actions.add_parser("import", help="add or update records (changed ones go back to pending)")
    review_import.add_argument("files", nargs="+")
    review_import.add_argument("--approve", action="store_true", help="import as approved (a trusted export)")
    review_import.add_argument("--reviewer", default=None)
    review_list = actions.add_parser("list", help="counts by status and some records")
    review_list.add_argument("--status", choices=[status.value for status in ReviewStatus])
    review_list.add_argument("--limit", type=int, default=20)
    actions.add_parser("backup", help="copy the SQLite review database to FILE, consistently while it is used"
                       ).add_argument("file")
    actions.add_parser("restore", help="replace the review database with a backup FILE (checked first)"
                       ).add_argument("file")
    for action in ("approve", "reject"):
        verdict = actions.add_parser(action, help=f"{action} records")
        verdict.add_argument("kids", nargs="*")
        verdict.add_argument("--all-pending", action="store_true")
        verdict.add_argument("--reviewer", required=True)
    review.set_defaults(handler=cmd_review)

    rollback = commands.add_parser("rollback", help="serve an earlier version again (default: the previous one)")
    rollback.add_argument("version", nargs="?", help="the version to serve (see `kb versions`)")
    rollback.set_defaults(handler=cmd_rollback)

    tune = commands.add_parser("tune", help="tune scoring weights on judged queries (k-fold, coordinate ascent)")
    tune.add_argument("--queries", required=True, help="JSONL: qid, task, query")
    tune.add_argument("--qrels", required=True, help="TREC qrels: qid 0 kid grade")
    tune.add_argument("--folds", type=int, default=3)
    tune.add_argument("--rounds", type=int, default=2, help="passes over the weights per fold")
    tune.add_argument("--out", required=True, help="the YAML overlay to write (extends the config tuned)")
    tune.set_defaults(handler=cmd_tune)

    judgments = commands.add_parser("judgments", help="graded judgments from the front end's search events")
    judgment_actions = judgments.add_subparsers(dest="action", required=True)
    from_events = judgment_actions.add_parser(
        "from-events", help="TREC qrels from impressions and clicks, corrected for position bias (PBM)")
    from_events.add_argument("--qrels", required=True, help="where the qrels go (qid 0 kid grade)")
    from_events.add_argument("--queries", help="where the queries go (JSONL qid, task, query), for `kb eval`")
    from_events.add_argument("--min-impressions", type=int, default=10,
                             help="times a hit must have been shown for a query to be judged")
    export = judgment_actions.add_parser("export", help="the console's judgment list as TREC qrels")
    export.add_argument("--qrels", required=True)
    export.add_argument("--queries", help="where the queries go (JSONL qid, task, query)")
    imported = judgment_actions.add_parser("import", help="add judgments from TREC qrels and their queries")
    imported.add_argument("--qrels", required=True)
    imported.add_argument("--queries", required=True, help="JSONL qid, task, query: the texts the qids stand for")
    imported.add_argument("--rater", default="import", help="who the judgments are recorded as from")
    judgments.set_defaults(handler=cmd_judgments)

    suggest = commands.add_parser(
        "suggest-understanding", help="attribute phrasings and aliases mined from clicks, for an analyst to approve")
    suggest.add_argument("--min-impressions", type=int, default=10,
                         help="times a hit must have been shown for a query to be judged")
    suggest.add_argument("--min-queries", type=int, default=3,
                         help="entities a phrasing (clicks an alias) must have led to before it is proposed")
    suggest.add_argument("--approve", nargs="+", metavar="ID", help="approve these proposals (next reload)")
    suggest.add_argument("--reject", nargs="+", metavar="ID", help="reject these proposals")
    suggest.add_argument("--reviewer", default="", help="who approves or rejects")
    suggest.add_argument("--status", choices=["pending", "approved", "rejected"],
                         help="list proposals with this status instead of mining")
    suggest.add_argument("--json", action="store_true")
    suggest.set_defaults(handler=cmd_suggest_understanding)

    versions = commands.add_parser("versions", help="list index versions (* marks the served one)")
    versions.add_argument("--json", action="store_true")
    versions.set_defaults(handler=cmd_versions)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.verbose)
    try:
        runtime = Runtime.start(args.config)
        if runtime.config.server.log_format is not LogFormat.TEXT:
            logs.configure(args.verbose, runtime.config.server.log_format.value)
        with runtime:
            return args.handler(runtime, args)
    except KbError as err:
        print(f"kb: {err}", file=sys.stderr)
        return err.exit_code
