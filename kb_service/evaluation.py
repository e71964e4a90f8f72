"""Relevance evaluation on TREC-style judgments, measured by ir-measures (trec_eval's definitions) with a paired
significance test for every difference between configurations.

nDCG@10 uses trec_eval's linear gains, MRR@10 counts only exact (grade-2) records, R@k any graded record. A
query with no judgment is skipped as trec_eval skips it; a judged query with no hits scores 0 (trec_eval -c).
Used by `kb eval`, `kb tune`, the console's comparison, the slow relevance tests and the benchmarks.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ir_measures
import numpy as np
from ir_measures import RR, R, nDCG

from kb_service.errors import InputError

# Shown name -> ir-measures measure; the names are what tables, JSON and the console show.
MEASURES = {"nDCG@10": nDCG @ 10, "MRR@10": RR(rel=2) @ 10, "R@10": R @ 10, "R@100": R @ 100}
_NAMES = {str(measure): name for name, measure in MEASURES.items()}
_FIELDS = dict(zip(MEASURES, ("ndcg10", "mrr10", "recall10", "recall100"), strict=True))  # TaskScores field
SIGNIFICANCE = 0.05  # a difference whose paired randomisation test gives a lower p is marked as significant
RESAMPLES = 9999  # sign flips drawn by the randomisation test (p is at least 1 / (RESAMPLES + 1))


@dataclass(frozen=True)
class EvalQuery:
    qid: str
    task: str
    text: str


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Numbered non-blank lines of a judged-query file; an unreadable file is the caller's input error."""
    try:
        with open(path, encoding="utf-8") as handle:
            yield from ((number, line) for number, line in enumerate(handle, start=1) if line.strip())
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read: {getattr(err, 'strerror', None) or err}", str(path)) from None


def read_queries(path: str | Path) -> list[EvalQuery]:
    """JSONL with qid, task and query per line; a bad line is refused by file and line."""
    queries = []
    for number, line in _lines(path):
        try:
            row = json.loads(line)
            queries.append(EvalQuery(str(row["qid"]), str(row.get("task", "all")), str(row["query"])))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InputError("expected a JSON object with qid, task and query", f"{path}:{number}") from None
    return queries


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC qrels (qid, iteration, kid, grade); a bad line is refused by file and line."""
    judgments: dict[str, dict[str, int]] = defaultdict(dict)
    for number, line in _lines(path):
        parts = line.split()
        if len(parts) != 4 or not parts[3].lstrip("-").isdigit():
            raise InputError("expected TREC qrels: qid 0 kid grade", f"{path}:{number}")
        judgments[parts[0]][parts[2]] = int(parts[3])
    return dict(judgments)


def query_id(text: str, task: str) -> str:
    """A stable qid for a judged query text (`judged:…`, `clicks:…`), so exports of the same list line up
    run after run."""
    return f"{task}:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def write_judgments(qrels: str | Path, queries: str | Path | None, judged: list[tuple[str, str, int]],
                    task: str) -> None:
    """(query text, kid, grade) as TREC qrels under `query_id`s, and the queries file that maps those qids
    back to their texts for `kb eval` (when `queries` is given)."""
    with open(qrels, "w", encoding="utf-8") as handle:
        for text, kid, grade in judged:
            handle.write(f"{query_id(text, task)} 0 {kid} {grade}\n")
    if queries:
        with open(queries, "w", encoding="utf-8") as handle:
            for text in dict.fromkeys(text for text, _, _ in judged):
                handle.write(json.dumps({"qid": query_id(text, task), "task": task, "query": text},
                                        ensure_ascii=False) + "\n")


def read_run(path: str | Path) -> dict[str, list[str]]:
    """A TREC run (qid Q0 kid rank score tag), each query's records ordered by score, highest first; a bad
    line is refused by file and line."""
    scored: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for number, line in _lines(path):
        parts = line.split()
        try:
            if len(parts) != 6:
                raise ValueError
            scored[parts[0]].append((-float(parts[4]), int(parts[3]), parts[2]))
        except ValueError:
            raise InputError("expected a TREC run: qid Q0 kid rank score tag", f"{path}:{number}") from None
    return {qid: [kid for *_, kid in sorted(rows)] for qid, rows in scored.items()}


def write_run(path: str | Path, rankings: dict[str, list[str]], tag: str) -> None:
    """`rankings` as a TREC run that `kb eval --run` (or trec_eval) reads back in the same order."""
    with open(path, "w", encoding="utf-8") as handle:
        for qid, ranked in rankings.items():
            for rank, kid in enumerate(dict.fromkeys(ranked), start=1):
                handle.write(f"{qid} Q0 {kid} {rank} {len(ranked) - rank + 1} {tag}\n")


def measure_rankings(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """Every measure of every judged query in `rankings` (query id -> record ids, best first); the order is
    passed as strictly decreasing scores, so trec_eval's tie-breaking by document id never reorders it."""
    judged = {qid: qrels[qid] for qid in rankings if qrels.get(qid)}
    run = {qid: {kid: float(len(ranked) - rank) for rank, kid in enumerate(dict.fromkeys(ranked))}
           for qid, ranked in rankings.items() if qid in judged and ranked}
    values = {qid: dict.fromkeys(MEASURES, 0.0) for qid in judged}
    for metric in ir_measures.iter_calc(list(MEASURES.values()), judged, run):
        values[metric.query_id][_NAMES[str(metric.measure)]] = float(metric.value)
    return values


@dataclass(frozen=True)
class TaskScores:
    task: str
    queries: int
    ndcg10: float
    mrr10: float
    recall10: float
    recall100: float


@dataclass(frozen=True)
class ConfigRun:
    """One configuration's scores over the same queries: per task, and per query and measure (for wins,
    losses and significance)."""

    label: str
    tasks: list[TaskScores]
    per_query: dict[str, dict[str, float]]
    task_of: dict[str, str]

    def ndcg(self) -> dict[str, float]:
        return {qid: values["nDCG@10"] for qid, values in self.per_query.items()}


def rank_judged(queries: list[EvalQuery], qrels: dict[str, dict[str, int]], rank: Callable[[str], list[str]]
                ) -> dict[str, list[str]]:
    """Every judged query's ranking by `rank`; queries without a judgment are not run."""
    return {query.qid: rank(query.text) for query in queries if qrels.get(query.qid)}


def evaluate(queries: list[EvalQuery], qrels: dict[str, dict[str, int]], rank: Callable[[str], list[str]],
             label: str = "") -> ConfigRun:
    """Ranks every judged query with `rank` and measures it."""
    return evaluate_rankings(queries, qrels, rank_judged(queries, qrels, rank), label)


def evaluate_rankings(queries: list[EvalQuery], qrels: dict[str, dict[str, int]], rankings: dict[str, list[str]],
                      label: str = "") -> ConfigRun:
    """Measures rankings made earlier (a saved run: a query it lacks scores 0), per task and per query."""
    judged = [query for query in queries if qrels.get(query.qid)]
    per_query = measure_rankings({query.qid: rankings.get(query.qid, []) for query in judged}, qrels)
    task_of = {query.qid: query.task for query in judged}
    by_task: dict[str, list[str]] = defaultdict(list)
    for query in judged:
        by_task[query.task].append(query.qid)
    tasks = [TaskScores(task, len(ids), *(sum(per_query[q][name] for q in ids) / len(ids) for name in MEASURES))
             for task, ids in sorted(by_task.items())]
    return ConfigRun(label, tasks, per_query, task_of)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def paired_p_value(before: list[float], after: list[float]) -> float:
    """Two-sided paired randomisation (Fisher) test of the mean difference between two measurements of the
    same queries, with a fixed seed so a report is reproducible; unlike a t-test it stays valid when every
    query moves by the same amount. 1.0 where the two agree on every query."""
    from scipy.stats import permutation_test  # scipy.stats takes a second to import; most commands never test

    a, b = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if not np.any(a != b):
        return 1.0
    result = permutation_test((b, a), _mean_difference, permutation_type="samples", vectorized=True,
                              n_resamples=RESAMPLES, batch=1000, alternative="two-sided", rng=0)
    return float(result.pvalue)


def p_value(base: ConfigRun, other: ConfigRun, task: str, measure: str) -> float:
    """`paired_p_value` of `measure` over the task's queries both runs measured."""
    ids = [q for q, t in base.task_of.items() if t == task and q in other.per_query]
    return paired_p_value([base.per_query[q][measure] for q in ids], [other.per_query[q][measure] for q in ids])


def format_table(runs: list[ConfigRun]) -> str:
    """Side-by-side table: one row per task and measure, one column per configuration; every configuration
    after the first shows the p-value of its difference to the first (paired randomisation test), starred
    below 0.05."""
    labels = [run.label for run in runs]
    lines = ["| task | metric | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for index, task in enumerate(runs[0].tasks):
        for name, attribute in _FIELDS.items():
            cells = [f"{task_scores(run, task.task, attribute):.3f}" for run in runs[:1]]
            for run in runs[1:]:
                p = p_value(runs[0], run, task.task, name)
                star = "*" if p < SIGNIFICANCE else ""
                cells.append(f"{task_scores(run, task.task, attribute):.3f} (p={p:.3g}{star})")
            lines.append(f"| {task.task} (n={runs[0].tasks[index].queries}) | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def task_scores(run: ConfigRun, task: str, attribute: str) -> float:
    return next((getattr(t, attribute) for t in run.tasks if t.task == task), 0.0)


def comparison(base: ConfigRun, other: ConfigRun) -> list[dict]:
    """Per task and measure: both means, the difference and its p-value (for `kb eval --json`)."""
    rows = []
    for task in base.tasks:
        for name, attribute in _FIELDS.items():
            before, after = getattr(task, attribute), task_scores(other, task.task, attribute)
            rows.append({"task": task.task, "measure": name, "base": before, "other": after,
                         "difference": after - before, "p_value": p_value(base, other, task.task, name)})
    return rows


def wins_and_losses(base: ConfigRun, other: ConfigRun, margin: float = 1e-9) -> tuple[list[str], list[str]]:
    """Query ids where `other` has a higher / lower nDCG@10 than `base`."""
    before, after = base.ndcg(), other.ndcg()
    wins = [q for q, v in after.items() if v > before.get(q, 0.0) + margin]
    losses = [q for q, v in after.items() if v < before.get(q, 0.0) - margin]
    return wins, losses
