"""Text normalisation shared by indexing and querying, so both sides see the same characters.

NFKC folds full-width forms to half-width, OpenCC folds traditional characters to simplified, control and
format characters (zero-width spaces, BOMs) are dropped, case and runs of white space are folded.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import opencc

_SPACES = re.compile(r"\s+")
_TO_SIMPLIFIED = opencc.OpenCC("t2s").convert


def _convertible_characters() -> frozenset[str]:
    """Every character OpenCC's t2s could change: the keys of its character table, and the characters of
    its phrase table that differ from their conversion. Text holding none of them converts to itself, so
    the (slow, pure-Python) conversion is skipped for it: most KB text is simplified already."""
    dictionaries = Path(opencc.__file__).parent / "dictionary"
    chars: set[str] = set()
    for line in (dictionaries / "TSCharacters.txt").read_text(encoding="utf-8").splitlines():
        key, _, values = line.partition("\t")
        if values.split(" ")[0] != key:
            chars.update(key)
    for line in (dictionaries / "TSPhrases.txt").read_text(encoding="utf-8").splitlines():
        key, _, values = line.partition("\t")
        value = values.split(" ")[0]
        chars.update(key if len(key) != len(value) else (k for k, v in zip(key, value, strict=True) if k != v))
    return frozenset(chars)


_CONVERTIBLE = _convertible_characters()


def _visible(text: str) -> str:
    """`text` without control, format and unassigned characters; a printable text (every category C character
    is unprintable) is returned as it is without looking at each character."""
    if text.isprintable():
        return text
    return "".join(ch for ch in text if ch in " \t\n" or unicodedata.category(ch)[0] != "C")


@lru_cache(maxsize=65536)
def normalise_text(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text)
    if not folded.isascii():
        folded = _visible(folded)
        if not _CONVERTIBLE.isdisjoint(folded):
            folded = _TO_SIMPLIFIED(folded)
    return _SPACES.sub(" ", folded).strip().lower()


@lru_cache(maxsize=65536)
def fold_character(char: str) -> str:
    """One character as `normalise_text` folds it inside a text (possibly several characters, or none), for
    mapping positions in normalised text back to the original."""
    folded = _visible(unicodedata.normalize("NFKC", char))
    if not _CONVERTIBLE.isdisjoint(folded):
        folded = _TO_SIMPLIFIED(folded)
    return _SPACES.sub(" ", folded).lower()


@lru_cache(maxsize=65536)
def alias_key(text: str) -> str:
    """A name with spelling variation folded away: case, accents, spacing, hyphens and apostrophes, and
    traditional characters, so 'Ning-hsiang Xian', 'ningxiang xian' and 'Ningxiàng Xian' share one key."""
    decomposed = unicodedata.normalize("NFKD", normalise_text(text))
    return "".join(ch for ch in decomposed if ch.isalnum())


def is_punctuation(token: str) -> bool:
    return all(unicodedata.category(ch)[0] in "PSZ" for ch in token)


DEFAULT_PARTICLES = "的了地得"


@lru_cache(maxsize=16)
def _noise(particles: str) -> re.Pattern:
    return re.compile(f"[{re.escape(particles)}\\s\\W_]+" if particles else r"[\s\W_]+")


def duplicate_key(text: str, particles: str = DEFAULT_PARTICLES) -> str:
    """The text with particles, spacing and punctuation removed after normalisation: two records whose texts
    share keys say the same thing (杭州的人口 / 杭州 人口 / 杭州人口)."""
    return _noise(particles).sub("", normalise_text(text))
