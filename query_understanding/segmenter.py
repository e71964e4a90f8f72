"""jieba segmentation with the KB's own entity and attribute names as a user dictionary.

One Segmenter belongs to one index version: the same dictionary segments the records when the version is
built and the queries it answers, which keeps index-time and query-time tokens identical.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import jieba

from query_understanding.normalise import is_punctuation, normalise_text

jieba.setLogLevel(logging.WARNING)
_INIT_LOCK = threading.Lock()


class Segmenter:
    def __init__(self, user_words: Iterable[str] = ()):
        self._tokenizer = jieba.Tokenizer()
        with _INIT_LOCK:
            self._tokenizer.initialize()
        for word in user_words:
            word = normalise_text(word)
            if word and " " not in word:
                self._tokenizer.add_word(word, freq=None)

    def tokens(self, text: str) -> list[str]:
        """Normalised, punctuation-free tokens; white space inside a word (English names) splits it."""
        out = []
        for piece in self._tokenizer.lcut(normalise_text(text), HMM=True):
            piece = piece.strip()
            if piece and not is_punctuation(piece):
                out.append(piece)
        return out

    def segmented(self, text: str) -> str:
        """The whitespace-joined form stored in text fields, for engines with a whitespace analyser."""
        return " ".join(self.tokens(text))
