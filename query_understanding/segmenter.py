"""jieba segmentation with the KB's own entity and attribute names as a user dictionary.

One Segmenter belongs to one index version: the same dictionary segments the records when the version is
built and the queries it answers, which keeps index-time and query-time tokens identical.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

import jieba

from query_understanding.normalise import is_punctuation, normalise_text

jieba.setLogLevel(logging.WARNING)
_INIT_LOCK = threading.Lock()
_base_dictionary: list[tuple[dict[str, int], int]] = []  # jieba's prefix dictionary and total, read once
_LATIN = "0-9a-z\u00c0-\u024f\u1e00-\u1eff"
_LATIN_WORD = re.compile(f"[{_LATIN}]+(?:['.\\-][{_LATIN}]+)*")


def preload() -> None:
    """Read jieba's base dictionary now (0.6 s, once per process), e.g. on a thread while a version opens."""
    with _INIT_LOCK:
        if not _base_dictionary:
            loader = jieba.Tokenizer()
            loader.initialize()
            _base_dictionary.append((loader.FREQ, loader.total))


def _fresh_tokenizer() -> jieba.Tokenizer:
    """A jieba tokenizer holding its own copy of the base dictionary: the dictionary is unmarshalled from
    jieba's cache once per process (0.7 s) and copied for every later version (tens of milliseconds), since
    each version adds its own user words to it."""
    preload()
    frequencies, total = _base_dictionary[0]
    tokenizer = jieba.Tokenizer()
    tokenizer.FREQ, tokenizer.total, tokenizer.initialized = dict(frequencies), total, True
    return tokenizer


class Segmenter:
    def __init__(self, user_words: Iterable[str] = (), added: dict | None = None):
        """`added`: what `added_words()` returned for the same user words, which restores them in a fraction
        of a second instead of jieba's `add_word` for each (6 s for kb-large's 205,000 names)."""
        self._tokenizer = _fresh_tokenizer()
        self._added = added
        if added is not None:
            self._tokenizer.FREQ.update(added["words"])
            self._tokenizer.total = added["total"]
            return
        for word in user_words:
            word = normalise_text(word)
            if word and " " not in word:
                self._tokenizer.add_word(word, freq=None)

    def added_words(self) -> dict:
        """The entries the user words put into jieba's dictionary (their frequencies and prefixes) and the new
        total, computed once when a version is built and stored with it (jieba's dictionary does not change
        after the user words are added, so the answer is kept)."""
        if self._added is None:
            base, _ = _base_dictionary[0]
            frequencies = self._tokenizer.FREQ
            self._added = {"words": {word: count for word, count in frequencies.items() if base.get(word) != count},
                           "total": self._tokenizer.total}
        return self._added

    def tokens(self, text: str) -> list[str]:
        """Normalised, punctuation-free tokens. Latin-script words stay whole, accents included: jieba
        would cut 'chuī' into 'chu' + 'ī', and 'chu' would then match English text."""
        normalised = normalise_text(text)
        out: list[str] = []
        position = 0
        for word in _LATIN_WORD.finditer(normalised):
            out.extend(self._jieba(normalised[position:word.start()]))
            out.append(word.group())
            position = word.end()
        out.extend(self._jieba(normalised[position:]))
        return out

    def _jieba(self, text: str) -> list[str]:
        if not text.strip():
            return []
        pieces = (piece.strip() for piece in self._tokenizer.lcut(text, HMM=True))
        return [piece for piece in pieces if piece and not is_punctuation(piece)]

    def segmented(self, text: str) -> str:
        """The whitespace-joined form stored in text fields, for engines with a whitespace analyser."""
        return " ".join(self.tokens(text))
