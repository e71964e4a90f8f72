"""`kb tune`: coordinate ascent over the scoring weights on a judgment list, k-fold cross-validated.

The weights searched are those an analyst edits: the formula's term weights, the clause boosts and the
rescoring steps' weights. Each is tried at half, double and zero (or 1 when it is zero) while the mean
nDCG@10 of the training queries improves (a switched-off weight is tried at 1 and at its kind's typical
value). Every fold tunes on the other folds and is scored on its own
queries, so the table shows what tuning is worth on queries it never saw; the result is written as a
YAML overlay that `extends:` the config it started from, never over it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from kb_service.config import config_from_raw, read_raw
from kb_service.evaluation import EvalQuery, evaluate, paired_p_value
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from scoring.planner import SearchRequest

log = logging.getLogger(__name__)
MIN_GAIN = 2e-3  # nDCG@10 a move must add to be kept, and at least a tenth of one query's full swing …


KeyPath = tuple  # into the raw config: ("scoring", "boosts", "value_term"), ("scoring", "rescoring", 2, "weight")


def tunable_paths(raw: dict) -> list[KeyPath]:
    scoring = raw.get("scoring", {})
    paths: list[KeyPath] = [("scoring", "boosts", name) for name in sorted(scoring.get("boosts", {}))]
    paths += [("scoring", "formula", "terms", i, "weight")
              for i, term in enumerate(scoring.get("formula", {}).get("terms", [])) if "weight" in term]
    paths += [("scoring", "rescoring", i, "weight")
              for i, step in enumerate(scoring.get("rescoring", [])) if isinstance(step.get("weight"), int | float)]
    return paths


def label(raw: dict, path: KeyPath) -> str:
    """A readable name: scoring.formula.terms[cosine].weight, scoring.rescoring[entity_grouping].weight."""
    parts: list[str] = []
    node: Any = raw
    for key in path:
        if isinstance(key, int):
            item = node[key]
            parts[-1] += f"[{item.get('term') or item.get('strategy') or key}]"
        else:
            parts.append(str(key))
        node = node[key]
    return ".".join(parts)


def get(raw: dict, path: KeyPath) -> float:
    node: Any = raw
    for key in path:
        node = node[key]
    return float(node)


def with_value(raw: dict, path: KeyPath, value: float) -> dict:
    changed = copy.deepcopy(raw)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = round(value, 6)
    return changed


def overlay(base_path: Path, raw: dict, tuned: dict) -> str:
    """YAML that extends `base_path` and restates what tuning changed (a changed list entry restates its list)."""
    scoring, changes = tuned.get("scoring", {}), {}
    for section in ("boosts", "formula", "rescoring"):
        if scoring.get(section) != raw.get("scoring", {}).get(section):
            changes[section] = scoring[section]
    header = f"# written by `kb tune` from {base_path}; review, then serve it with --config or promote it\n"
    body = {"extends": str(base_path.resolve()), **({"scoring": changes} if changes else {})}
    return header + yaml.safe_dump(body, allow_unicode=True, sort_keys=False)  # `scoring: {}` would mean none


@dataclass
class Tuner:
    """Scores raw configs on judged queries with one search service whose config is swapped per candidate."""

    base_path: Path
    service: SearchService
    qrels: dict[str, dict[str, int]]
    evaluations: int = 0

    def score(self, raw: dict, queries: list[EvalQuery]) -> float:
        per_query = self.per_query(raw, queries)
        return sum(per_query.values()) / max(len(per_query), 1)

    def per_query(self, raw: dict, queries: list[EvalQuery]) -> dict[str, float]:
        """nDCG@10 of each query under the candidate `raw` config."""
        config = self.service.runtime.environment.apply(
            config_from_raw(raw, str(self.base_path.parent / "tuning-candidate.yaml")))
        self.service.reload_config(replace(config, version=f"tune-{self.evaluations}"))
        self.evaluations += 1
        return evaluate(queries, self.qrels, lambda q: [
            h.record.kid for h in self.service.search(SearchRequest(query=q, size=10)).hits]).ndcg()

    def ascend(self, raw: dict, queries: list[EvalQuery], rounds: int,
               report: Callable[[str], None] = log.info) -> tuple[dict, float]:
        best, best_score = raw, self.score(raw, queries)
        needed = max(MIN_GAIN, 0.1 / max(len(queries), 1))  # … so noise on a query or two cannot move a weight
        for round_number in range(1, rounds + 1):
            moved = False
            paths = tunable_paths(best)
            for path in paths:
                value = get(best, path)
                for candidate in ([value * 0.5, value * 2.0, 0.0] if value else _from_zero(best, path, paths)):
                    trial = with_value(best, path, candidate)
                    trial_score = self.score(trial, queries)
                    if trial_score >= best_score + needed:
                        report(f"round {round_number}: {label(best, path)} {value:g} → {candidate:g}: "
                               f"nDCG@10 {best_score:.4f} → {trial_score:.4f}")
                        best, best_score, moved = trial, trial_score, True
                        break
            if not moved:
                break
        return best, best_score


def _from_zero(raw: dict, path: KeyPath, paths: list[KeyPath]) -> list[float]:
    """What a switched-off weight is tried at: 1, and the mean of its switched-on siblings (the other boosts,
    the other terms), the scale its kind works at."""
    kind = [p for p in paths if p[:3] == path[:3] and p != path and get(raw, p) > 0]
    typical = sum(get(raw, p) for p in kind) / len(kind) if kind else 1.0
    return sorted({1.0, round(typical, 6)})


def folds(queries: list[EvalQuery], k: int) -> list[list[EvalQuery]]:
    """k folds by a hash of the query id: stable across runs, independent of the file's order."""
    buckets: list[list[EvalQuery]] = [[] for _ in range(k)]
    for query in queries:
        buckets[int(hashlib.sha1(query.qid.encode()).hexdigest(), 16) % k].append(query)
    return buckets


def changed_weights(raw: dict, tuned: dict) -> list[str]:
    return [f"{label(raw, p)} {get(raw, p):g}→{get(tuned, p):g}" for p in tunable_paths(raw)
            if get(raw, p) != get(tuned, p)]


@dataclass(frozen=True)
class CrossValidation:
    """Per fold: (fold, training queries, held-out queries, default nDCG@10, tuned nDCG@10, changes); per
    task: (task, queries, default, tuned, p-value of the difference) over the held-out folds (each query is
    held out once); and the weights tuned on every query."""

    folds: list[tuple]
    tasks: list[tuple]
    tuned: dict


def cross_validate(runtime: Runtime, queries: list[EvalQuery], qrels: dict[str, dict[str, int]], k: int,
                   rounds: int, report: Callable[[str], None]) -> CrossValidation:
    base_path = Path(runtime.config.source)
    raw = read_raw(base_path)
    tuner = Tuner(base_path, SearchService(runtime), qrels)
    rows, held_default, held_tuned = [], {}, {}
    parts = folds(queries, k)
    for index, held_out in enumerate(parts):
        training = [q for i, part in enumerate(parts) if i != index for q in part]
        tuned, _ = tuner.ascend(raw, training, rounds, report)
        default_scores, tuned_scores = tuner.per_query(raw, held_out), tuner.per_query(tuned, held_out)
        held_default.update(default_scores)
        held_tuned.update(tuned_scores)
        rows.append((index + 1, len(training), len(held_out), _mean(default_scores.values()),
                     _mean(tuned_scores.values()), changed_weights(raw, tuned)))
        report(f"fold {index + 1}: held-out nDCG@10 default {rows[-1][3]:.4f}, tuned {rows[-1][4]:.4f}")
    tasks = []
    for task in sorted({q.task for q in queries}):
        ids = [q.qid for q in queries if q.task == task]
        before, after = [held_default[i] for i in ids], [held_tuned[i] for i in ids]
        tasks.append((task, len(ids), _mean(before), _mean(after), paired_p_value(before, after)))
    final, _ = tuner.ascend(raw, queries, rounds, report)
    return CrossValidation(rows, tasks, final)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
