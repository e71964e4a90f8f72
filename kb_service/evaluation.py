"""Relevance evaluation on TREC-style judgments: nDCG@10, MRR@10 on exact (grade-2) records, Recall@k.

Used by the slow relevance tests now and by `kb eval` for analysts.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kb_service.errors import InputError


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


def ndcg_at(ranked: list[str], grades: dict[str, int], k: int = 10) -> float:
    gain = sum((2 ** grades.get(kid, 0) - 1) / math.log2(rank + 2) for rank, kid in enumerate(ranked[:k]))
    ideal = sorted(grades.values(), reverse=True)[:k]
    best = sum((2 ** g - 1) / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return gain / best if best else 0.0


def mrr_at(ranked: list[str], grades: dict[str, int], k: int = 10, grade: int = 2) -> float:
    for rank, kid in enumerate(ranked[:k], start=1):
        if grades.get(kid, 0) >= grade:
            return 1.0 / rank
    return 0.0


def recall_at(ranked: list[str], grades: dict[str, int], k: int) -> float:
    relevant = {kid for kid, g in grades.items() if g > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


@dataclass(frozen=True)
class TaskScores:
    task: str
    queries: int
    ndcg10: float
    mrr10: float
    recall10: float
    recall100: float


def evaluate(queries: list[EvalQuery], qrels: dict[str, dict[str, int]],
             rank: Callable[[str], list[str]]) -> tuple[list[TaskScores], dict[str, float]]:
    """Scores per task, and nDCG@10 per query (for wins and losses between configs)."""
    per_task: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    per_query: dict[str, float] = {}
    for query in queries:
        grades = qrels.get(query.qid, {})
        ranked = rank(query.text)
        row = (ndcg_at(ranked, grades), mrr_at(ranked, grades), recall_at(ranked, grades, 10),
               recall_at(ranked, grades, 100))
        per_task[query.task].append(row)
        per_query[query.qid] = row[0]
    scores = [TaskScores(task, len(rows), *(sum(col) / len(rows) for col in zip(*rows, strict=True)))
              for task, rows in sorted(per_task.items())]
    return scores, per_query


@dataclass(frozen=True)
class ConfigRun:
    """One configuration's scores over the same queries."""

    label: str
    tasks: list[TaskScores]
    per_query: dict[str, float]


def format_table(runs: list[ConfigRun]) -> str:
    """Side-by-side table: one row per task and metric, one column per configuration."""
    labels = [run.label for run in runs]
    lines = ["| task | metric | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    tasks = [t.task for t in runs[0].tasks]
    metrics = (("nDCG@10", "ndcg10"), ("MRR@10", "mrr10"), ("R@10", "recall10"), ("R@100", "recall100"))
    for index, task in enumerate(tasks):
        for title, attribute in metrics:
            cells = [f"{getattr(run.tasks[index], attribute):.3f}" for run in runs]
            lines.append(f"| {task} (n={runs[0].tasks[index].queries}) | {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wins_and_losses(base: ConfigRun, other: ConfigRun, margin: float = 1e-9) -> tuple[list[str], list[str]]:
    """Query ids where `other` has a higher / lower nDCG@10 than `base`."""
    wins = [q for q, v in other.per_query.items() if v > base.per_query.get(q, 0.0) + margin]
    losses = [q for q, v in other.per_query.items() if v < base.per_query.get(q, 0.0) - margin]
    return wins, losses
