"""ONNX Runtime for the sentence-transformers encoders: the same vectors as torch for a fraction of the CPU.

A model folder is exported once, from the weights already on disk (torch's TorchScript exporter; nothing is
downloaded), into a folder of its own under the models home. The export is checked against the torch model
on a fixed batch of texts of mixed lengths and scripts before it is kept: a vector whose cosine with torch's
falls below `MIN_COSINE` refuses the export, and the encoder stays on torch. Only the pipelines this module
reproduces exactly are exported (a transformer, mean or CLS pooling, an optional normalisation); any other
module in a model folder keeps it on torch.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from kb_service.errors import KbError
from kb_service.ingest.packaged_models import move_into_place

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1
MIN_COSINE = 0.9999
MODEL_FILE = "model.onnx"
CHECK_FILE = "verified.json"
REFUSED_FILE = "refused.txt"

# Mixed lengths (padding), scripts, a text past the longest sequence (truncation) and a single character.
SAMPLE = (
    "Any woody climbing plant which bears grapes.",
    "a toothed wheel that engages another toothed mechanism",
    "杭州的人口",
    "阳春白雪 解释: 高深的文学艺术",
    "Paris",
    "x",
    "population of Paris: 2,100,000 (2019 census), the capital and largest city of France",
    "the act of moving something from one place to another, " * 60,
    "一个很长的解释，说明这个成语的来源和用法。" * 40,
    "Ünïcödé façade — naïve café, 東京 and Москва",
)

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"


class OnnxUnavailableError(KbError):
    """A model cannot be served by ONNX Runtime (a pipeline it does not reproduce, an export that does not
    match torch): `runtime: auto` stays on torch, `runtime: onnx` reports it naming `encoder.runtime`."""

    code = "onnx_unavailable"

    def __init__(self, message: str):
        super().__init__(message, "encoder.runtime")


@dataclass(frozen=True)
class Pipeline:
    """What a sentence-transformers folder computes after the transformer, read from its own files."""

    pooling: str  # "mean" or "cls"
    max_seq_length: int
    pad_token: str


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise OnnxUnavailableError(f"{path}: {err}") from None


def read_pipeline(model_dir: Path) -> Pipeline:
    """The folder's pipeline, or OnnxUnavailableError when it holds anything this module does not reproduce."""
    modules = _json(model_dir / "modules.json")
    types = [module.get("type") for module in modules]
    if types[:2] != [_TRANSFORMER, _POOLING] or any(t != _NORMALIZE for t in types[2:]):
        raise OnnxUnavailableError(f"{model_dir.name}: modules {types} are not transformer + pooling (+ normalize)")
    pooling_dir = modules[1]["path"]
    modes = {k for k, v in _json(model_dir / pooling_dir / "config.json").items() if k.startswith("pooling_mode")
             and v is True}
    pooling = {frozenset({"pooling_mode_mean_tokens"}): "mean", frozenset({"pooling_mode_cls_token"}): "cls"}
    if frozenset(modes) not in pooling:
        raise OnnxUnavailableError(f"{model_dir.name}: pooling {sorted(modes)} is not mean or CLS alone")
    settings = _json(model_dir / "sentence_bert_config.json")
    if settings.get("do_lower_case"):
        raise OnnxUnavailableError(f"{model_dir.name}: lower-casing outside the tokenizer is not reproduced")
    if not (model_dir / "tokenizer.json").is_file():
        raise OnnxUnavailableError(f"{model_dir.name}: no tokenizer.json (a fast tokenizer's file) to read")
    pad = _json(model_dir / "tokenizer_config.json").get("pad_token")
    pad_token = pad.get("content") if isinstance(pad, dict) else pad
    if not isinstance(pad_token, str):
        raise OnnxUnavailableError(f"{model_dir.name}: tokenizer_config.json names no pad_token")
    return Pipeline(pooling[frozenset(modes)], int(settings.get("max_seq_length") or 512), pad_token)


def export_dir(model_dir: Path, home: Path) -> Path:
    """Where a folder's export lives: named by the folder and a fingerprint of its weight files (path, size,
    modification time), so replaced weights are exported again instead of served from a stale graph."""
    fingerprint = xxhash.xxh64(f"{EXPORT_FORMAT}:{model_dir.resolve()}".encode())
    for weights in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        stat = weights.stat()
        fingerprint.update(f":{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return home / "onnx" / f"{model_dir.name}-{fingerprint.hexdigest()}"


class Tokens:
    """The model's own fast tokenizer, truncating as sentence-transformers does and padding per batch."""

    def __init__(self, model_dir: Path, pipeline: Pipeline):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=pipeline.max_seq_length)
        pad_id = self._tokenizer.token_to_id(pipeline.pad_token)
        if pad_id is None:
            raise OnnxUnavailableError(f"{model_dir.name}: pad token {pipeline.pad_token!r} is not in its vocabulary")
        self.pad_id = pad_id

    def batch(self, texts: list[str]) -> dict[str, np.ndarray]:
        encoded = self._tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encoded)
        ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, e in enumerate(encoded):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def _export(model_dir: Path, pipeline: Pipeline, target: Path) -> None:
    """Traces the transformer with its pooling into one graph (dynamic batch and sequence axes)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class Pooled(torch.nn.Module):
        def __init__(self, transformer: torch.nn.Module):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if pipeline.pooling == "cls":
                return hidden[:, 0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    example = (torch.ones((2, 8), dtype=torch.long), torch.ones((2, 8), dtype=torch.long))
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "embedding": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it fixes; the check below is the judge
        torch.onnx.export(Pooled(model), example, str(target), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          dynamic_axes=axes)


def session(model_file: Path, threads: int) -> Any:
    """An inference session computing on `threads` cores for one call at a time."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])


def _worst_cosine(model_dir: Path, tokens: Tokens, model_file: Path) -> float:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    expected = np.asarray(reference.encode(list(SAMPLE), convert_to_numpy=True, show_progress_bar=False), np.float64)
    found = np.asarray(session(model_file, 1).run(None, tokens.batch(list(SAMPLE)))[0], np.float64)
    cosines = (expected * found).sum(axis=1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(found, axis=1))
    return float(cosines.min())


def exported_model(model_dir: Path, home: Path) -> tuple[Path, Pipeline]:
    """The folder's verified ONNX graph, exported and checked the first time it is asked for. A refusal is
    kept too (the reason, not the graph), so later starts go straight to torch instead of exporting again;
    two processes exporting at once each write their own scratch folder and the first rename wins."""
    pipeline = read_pipeline(model_dir)
    target = export_dir(model_dir, home)
    if (target / CHECK_FILE).is_file():
        return target / MODEL_FILE, pipeline
    if (target / REFUSED_FILE).is_file():
        raise OnnxUnavailableError(target.joinpath(REFUSED_FILE).read_text(encoding="utf-8"))
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to ONNX in %s (once)", model_dir.name, target)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".exporting-") as scratch:
        built = Path(scratch) / "export"
        built.mkdir()
        model_file = built / MODEL_FILE
        try:
            _export(model_dir, pipeline, model_file)
        except (ImportError, RuntimeError, TypeError, ValueError) as err:  # the exporter's errors (and no onnx)
            raise OnnxUnavailableError(f"{model_dir.name}: the ONNX export failed: {err}") from None
        worst = _worst_cosine(model_dir, Tokens(model_dir, pipeline), model_file)
        refusal = None
        if worst < MIN_COSINE:
            refusal = (f"{model_dir.name}: the ONNX export's vectors differ from torch's (worst cosine "
                       f"{worst:.6f} < {MIN_COSINE}): refused")
            model_file.unlink()
            (built / REFUSED_FILE).write_text(refusal, encoding="utf-8")
        else:
            (built / CHECK_FILE).write_text(json.dumps({"format": EXPORT_FORMAT, "worst_cosine": worst,
                                                        "sample": len(SAMPLE)}), encoding="utf-8")
        move_into_place(built, target, REFUSED_FILE if refusal else CHECK_FILE)
    if refusal:
        raise OnnxUnavailableError(refusal)
    log.info("%s exported to ONNX: worst cosine with torch %.7f", model_dir.name, worst)
    return target / MODEL_FILE, pipeline
