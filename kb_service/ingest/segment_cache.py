"""Segmentations kept from one build to the next: jieba is the slowest step of building a version.

A segmentation depends on the text and on the user dictionary it was cut with, so the cache file is named
after the dictionary's digest: a reload that changes values but no entity or attribute names reuses every
unchanged text's tokens; one that changes the dictionary starts afresh (and is exact either way). The file
also keeps the entries those user words put into jieba's dictionary, so a build that has texts to cut
restores the segmenter in a fraction of a second instead of adding every name to jieba again.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

from query_understanding.segmenter import Segmenter


class CachedSegmenter:
    """`segmented(text)` as a Segmenter with these user words cuts it; the Segmenter (seconds to set up) is
    only built when some text is not in the cache."""

    def __init__(self, directory: Path, user_words: list[str]):
        digest = hashlib.blake2b("\n".join(sorted(user_words)).encode("utf-8"), digest_size=12).hexdigest()
        self.directory = directory
        self.path = directory / f"segmenter-{digest}.pickle"
        self.user_words = user_words
        self._segmenter: Segmenter | None = None
        self.known: dict[str, str] = {}
        self._added: dict | None = None
        self.reused = self.cut = 0
        if self.path.is_file():
            with open(self.path, "rb") as handle:
                stored = pickle.load(handle)
            self.known, self._added = stored["texts"], stored["added"]

    @property
    def segmenter(self) -> Segmenter:
        """The Segmenter with these user words, built on first use (also for the link-model fit)."""
        if self._segmenter is None:
            self._segmenter = Segmenter(self.user_words, added=self._added)
        return self._segmenter

    def segmented(self, text: str) -> str:
        found = self.known.get(text)
        if found is None:
            found = self.known[text] = self.segmenter.segmented(text)
            self.cut += 1
        else:
            self.reused += 1
        return found

    def save(self) -> None:
        """Keep this dictionary's segmentations (atomically) and drop those of other dictionaries."""
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            pickle.dump({"texts": self.known, "added": self.segmenter.added_words()}, handle,
                        protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, self.path)
        for other in (*self.directory.glob("segmenter-*.pickle"), *self.directory.glob("segments-*.pickle")):
            if other != self.path:
                other.unlink(missing_ok=True)
