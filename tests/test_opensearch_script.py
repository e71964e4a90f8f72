"""The formula's painless `script_score` executed on a real OpenSearch node with painless and k-NN
(scripts/os-local or $KB_OS_URL): every hit scores what the embedded engine's numpy evaluation of the same
formula gives for the same inputs, and records without a vector or a confidence score without error."""

import uuid

import numpy as np
import pytest
import requests

from scoring.expressions import OPENSEARCH_PAINLESS_VARIABLES
from scoring.numpy_functions import NUMPY_FUNCTIONS
from tests.conftest import make_config

DIMS = 8
RECORDS = [  # (id, text, confidence or None, has a vector)
    ("both", "杭州 人口 城市", 0.9, True),
    ("no-confidence", "杭州 时区", None, True),
    ("no-vector", "杭州 坐标", 0.4, False),
    ("text-only-weak", "上海 人口", 0.2, True),
    ("no-text-match", "东京 国家", 1.0, True),
]


@pytest.fixture()
def index(opensearch_url):
    name = f"kbt-script-{uuid.uuid4().hex[:8]}"
    base = f"{opensearch_url.rstrip('/')}/{name}"
    mapping = {"settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
               "mappings": {"properties": {
                   "text": {"type": "text", "analyzer": "whitespace"},
                   "confidence": {"type": "double"},
                   "vector": {"type": "knn_vector", "dimension": DIMS,
                              "method": {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil"}}}}}
    requests.put(base, json=mapping, timeout=30).raise_for_status()
    vectors = {}
    rng = np.random.default_rng(3)
    for kid, text, confidence, has_vector in RECORDS:
        document = {"text": text}
        if confidence is not None:
            document["confidence"] = confidence
        if has_vector:
            vectors[kid] = rng.normal(size=DIMS)
            document["vector"] = vectors[kid].tolist()
        requests.put(f"{base}/_doc/{kid}", json=document, timeout=30).raise_for_status()
    requests.post(f"{base}/_refresh", timeout=30).raise_for_status()
    yield base, vectors
    requests.delete(base, timeout=30)


def test_the_script_scores_every_hit_as_the_numpy_formula_does(index):
    base, vectors = index
    formula = make_config(".", share_cache=False).scoring.formula
    query_vector = np.random.default_rng(4).normal(size=DIMS)
    text_query = {"bool": {"should": [{"match": {"text": {"query": "杭州 人口", "boost": 10.0}}}]}}
    script = {"source": formula.painless_source(OPENSEARCH_PAINLESS_VARIABLES),
              "params": {**formula.params(), "query_vector": query_vector.tolist()}}
    scored = requests.post(f"{base}/_search", timeout=30, json={
        "size": 10, "query": {"script_score": {"query": text_query, "script": script}}}).json()
    assert "error" not in scored, scored
    hits = {hit["_id"]: hit["_score"] for hit in scored["hits"]["hits"]}
    text = {hit["_id"]: hit["_score"] for hit in requests.post(f"{base}/_search", timeout=30, json={
        "size": 10, "query": text_query}).json()["hits"]["hits"]}
    assert set(hits) == set(text) == {"both", "no-confidence", "no-vector", "text-only-weak"}

    kids = sorted(hits)
    unit = query_vector / np.linalg.norm(query_vector)
    cosine = np.array([float(vectors[k] @ unit / np.linalg.norm(vectors[k])) if k in vectors else -1.0
                       for k in kids])
    confidence = {kid: c for kid, _, c, _ in RECORDS}
    variables = {"cosine": cosine, "text_score": np.array([text[k] for k in kids]),
                 "confidence": np.array([formula.null_confidence if confidence[k] is None else confidence[k]
                                         for k in kids])}
    expected = sum(weight * raw for weight, raw in formula.evaluate_terms(variables, NUMPY_FUNCTIONS).values())
    assert [hits[k] for k in kids] == pytest.approx(expected.tolist(), abs=1e-4)
    assert hits["both"] > hits["no-vector"]  # a missing vector reads as cosine -1: no error, no bonus
