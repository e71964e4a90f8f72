"""A tiny expression language for the scoring formula, with two compilers: painless source and numpy.

Formula terms are written once as expression trees; Elasticsearch gets `render_painless`, the embedded
engine gets `evaluate`, so the two engines cannot drift apart. Importing numpy is left to the evaluator's
caller: `evaluate` works on any array type given matching functions (see `scoring.numpy_functions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Document-level inputs and how painless reads them. `confidence` falls back to a parameter when null; a
# record without a vector reads cosine -1 (the fast modes' value for a missing cosine) instead of failing.
PAINLESS_VARIABLES = {
    "cosine": "(doc['vector'].size() == 0 ? -1.0 : cosineSimilarity(params.query_vector, 'vector'))",
    "text_score": "_score",
    "confidence": "(doc['confidence'].size() == 0 ? params.null_confidence : doc['confidence'].value)",
    "age_days": "((params.now_millis - doc['update_timestamp'].value.toInstant().toEpochMilli()) / 86400000.0)",
}
# OpenSearch's k-NN plugin takes the vector's doc values, not the field name, in cosineSimilarity.
OPENSEARCH_PAINLESS_VARIABLES = {
    **PAINLESS_VARIABLES,
    "cosine": "(doc['vector'].size() == 0 ? -1.0 : cosineSimilarity(params.query_vector, doc['vector']))",
}
PAINLESS_FUNCTIONS = {"exp": "Math.exp", "log": "Math.log", "log1p": "Math.log1p", "max": "Math.max",
                      "min": "Math.min", "pow": "Math.pow"}


class Expr:
    def __add__(self, other):
        return BinOp("+", self, lift(other))

    def __radd__(self, other):
        return BinOp("+", lift(other), self)

    def __sub__(self, other):
        return BinOp("-", self, lift(other))

    def __rsub__(self, other):
        return BinOp("-", lift(other), self)

    def __mul__(self, other):
        return BinOp("*", self, lift(other))

    def __rmul__(self, other):
        return BinOp("*", lift(other), self)

    def __truediv__(self, other):
        return BinOp("/", self, lift(other))

    def __rtruediv__(self, other):
        return BinOp("/", lift(other), self)

    def __neg__(self):
        return BinOp("-", Const(0.0), self)


@dataclass(frozen=True)
class Const(Expr):
    value: float


@dataclass(frozen=True)
class Param(Expr):
    """A named constant passed as a script parameter (keeps painless scripts cacheable across weights)."""

    name: str


@dataclass(frozen=True)
class Var(Expr):
    name: str


@dataclass(frozen=True)
class BinOp(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Call(Expr):
    function: str
    args: tuple[Expr, ...]


def lift(value) -> Expr:
    return value if isinstance(value, Expr) else Const(float(value))


def call(function: str, *args) -> Call:
    if function not in PAINLESS_FUNCTIONS:
        raise ValueError(f"unknown function {function!r}")
    return Call(function, tuple(lift(a) for a in args))


def render_painless(expr: Expr, variables: dict[str, str] = PAINLESS_VARIABLES) -> str:
    """Painless source of `expr`, reading document inputs as `variables` says (the engines differ there)."""
    if isinstance(expr, Const):
        return repr(float(expr.value))
    if isinstance(expr, Param):
        return f"params.{expr.name}"
    if isinstance(expr, Var):
        return variables[expr.name]
    if isinstance(expr, BinOp):
        return f"({render_painless(expr.left, variables)} {expr.op} {render_painless(expr.right, variables)})"
    if isinstance(expr, Call):
        arguments = ", ".join(render_painless(a, variables) for a in expr.args)
        return f"{PAINLESS_FUNCTIONS[expr.function]}({arguments})"
    raise TypeError(f"not an expression: {expr!r}")


def evaluate(expr: Expr, variables: dict[str, Any], params: dict[str, float], functions: dict[str, Any]):
    """Evaluate over arrays of candidates; `functions` maps names to vectorised implementations."""
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Param):
        return params[expr.name]
    if isinstance(expr, Var):
        return variables[expr.name]
    if isinstance(expr, BinOp):
        left = evaluate(expr.left, variables, params, functions)
        right = evaluate(expr.right, variables, params, functions)
        if expr.op == "+":
            return left + right
        if expr.op == "-":
            return left - right
        if expr.op == "*":
            return left * right
        return left / right
    if isinstance(expr, Call):
        return functions[expr.function](*(evaluate(a, variables, params, functions) for a in expr.args))
    raise TypeError(f"not an expression: {expr!r}")


def variables_of(expr: Expr) -> set[str]:
    if isinstance(expr, Var):
        return {expr.name}
    if isinstance(expr, BinOp):
        return variables_of(expr.left) | variables_of(expr.right)
    if isinstance(expr, Call):
        return set().union(*(variables_of(a) for a in expr.args))
    return set()
