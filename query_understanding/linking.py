"""Linking query spans to KB names: exact longest match first, then pinyin (same sound, other characters)
and edit distance for Latin-script names. Exact links have confidence 1; fuzzy ones less.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import ahocorasick
from pypinyin import lazy_pinyin
from rapidfuzz import fuzz, process

from query_understanding.normalise import alias_key
from query_understanding.parsed_query import LinkedSpan

MAX_PINYIN_CHARS = 8
MIN_ALIAS_CHARS = 2
MIN_PINYIN_ALIAS_LETTERS = 5
_HAN_RUN = re.compile(r"[\u4e00-\u9fff]+")
_LATIN_RUN = re.compile(r"[^\0\s\u4e00-\u9fff]+(?: [^\0\s\u4e00-\u9fff]+)*")


_SEPARATORS = frozenset("-‐‑‒–—_,/·・")  # written or left out between the words of one name


def _is_word_char(ch: str) -> bool:
    """Letters and digits of scripts that separate words with spaces (Latin, Greek, Cyrillic); Chinese has
    no word boundaries to respect."""
    return ch.isalnum() and ord(ch) < 0x0590


def _on_word_boundaries(text: str, start: int, end: int) -> bool:
    """Latin-script names must not start or end inside a word (paris ≠ comparison)."""
    if _is_word_char(text[start]) and start > 0 and _is_word_char(text[start - 1]):
        return False
    return not (_is_word_char(text[end - 1]) and end < len(text) and _is_word_char(text[end]))


def folded(text: str) -> tuple[str, list[int] | None]:
    """`text` with hyphens, commas and the like read as spaces and runs of spaces as one ("lower-case" and
    "lower case", "X, Deluxe" and "x deluxe" fold alike), and the position in `text` of each folded
    character (None when folding changed nothing)."""
    if _SEPARATORS.isdisjoint(text) and "  " not in text:
        return text, None
    characters: list[str] = []
    positions: list[int] = []
    for index, ch in enumerate(text):
        ch = " " if ch in _SEPARATORS else ch
        if ch == " " and (not characters or characters[-1] == " "):
            continue
        characters.append(ch)
        positions.append(index)
    while characters and characters[-1] == " ":
        characters.pop()
        positions.pop()
    return "".join(characters), positions


class NameIndex:
    """Every occurrence of every known name in one pass over the text (an Aho–Corasick automaton), whatever
    the names' length or script, compared in folded form (`folded`). Built when a version is opened: the
    build is cheap beside reading the version, so no second on-disk format is needed for it."""

    def __init__(self, names: Iterable[str]):
        self._automaton = ahocorasick.Automaton()
        keys: dict[str, list[str]] = defaultdict(list)
        for name in names:
            key = folded(name)[0]
            if key:
                keys[key].append(name)
        for key, spellings in keys.items():
            self._automaton.add_word(key, (len(key), tuple(spellings)))
        if keys:
            self._automaton.make_automaton()

    def __len__(self) -> int:
        return len(self._automaton)

    def longest_matches(self, text: str, min_chars: int) -> list[LinkedSpan]:
        """Leftmost-longest occurrences of known names that start and end on word boundaries, each span
        naming the stored name (the one spelled as typed when folding joins several); a name shorter than
        `min_chars` counts only when it is the whole text."""
        if not len(self._automaton):
            return []
        key, positions = folded(text)
        longest: dict[int, tuple[int, tuple[str, ...]]] = {}  # start in text → (end in text, names)
        for last, (length, names) in self._automaton.iter(key):
            first = last - length + 1
            start, end = (first, last + 1) if positions is None else (positions[first], positions[last] + 1)
            if end - start < min_chars and (start, end) != (0, len(text)):
                continue
            if not _on_word_boundaries(text, start, end) or end <= longest.get(start, (0,))[0]:
                continue
            longest[start] = (end, names)
        spans, covered = [], 0
        for start in sorted(longest):
            if start < covered:
                continue
            end, names = longest[start]
            piece = text[start:end]
            spans.append(LinkedSpan(text=piece, name=piece if piece in names else names[0], tokens=(), start=start,
                                    end=end, confidence=1.0))
            covered = end
        return spans


def pinyin_key(name: str) -> str | None:
    """The syllables a Chinese name is indexed under for fuzzy linking (None for other names)."""
    if 2 <= len(name) <= MAX_PINYIN_CHARS and _HAN_RUN.fullmatch(name):
        return " ".join(lazy_pinyin(name))
    return None


@dataclass(frozen=True)
class FuzzyLinker:
    """Finds entity names a user misspelt: by pinyin for Chinese, by edit distance for Latin script."""

    by_pinyin: dict[str, tuple[str, ...]]
    latin_by_prefix: dict[str, tuple[str, ...]]
    pinyin_confidence: float = 0.8
    min_latin_score: float = 88.0

    @classmethod
    def build(cls, names: Iterable[str], pinyin_confidence: float, min_latin_score: float,
              keys: dict[str, str] | None = None) -> FuzzyLinker:
        """Index normalised names by pinyin and by their first two letters; links name these keys. `keys`:
        the pinyin keys computed when the version was built (`pinyin_keys`), else they are computed now."""
        by_pinyin: dict[str, list[str]] = defaultdict(list)
        latin: dict[str, list[str]] = defaultdict(list)
        for name in names:
            key = keys.get(name) if keys is not None else pinyin_key(name)
            if key:
                by_pinyin[key].append(name)
            elif name.isascii() and len(name) >= 5:
                latin[name[:2]].append(name)
        return cls({k: tuple(v) for k, v in by_pinyin.items()}, {k: tuple(v) for k, v in latin.items()},
                   pinyin_confidence, min_latin_score)

    def link(self, text: str) -> list[LinkedSpan]:
        return self._pinyin_links(text) or self._latin_links(text)

    def _pinyin_links(self, text: str) -> list[LinkedSpan]:
        """The longest run of Chinese characters that sounds like exactly one entity name."""
        runs = [(m.start(), m.group()) for m in _HAN_RUN.finditer(text)]
        syllables = {offset: lazy_pinyin(run) for offset, run in runs}
        for length in range(MAX_PINYIN_CHARS, 1, -1):
            for offset, run in runs:
                for start in range(len(run) - length + 1):
                    candidates = self.by_pinyin.get(" ".join(syllables[offset][start:start + length]), ())
                    if len(candidates) == 1:
                        begin = offset + start
                        return [LinkedSpan(run[start:start + length], candidates[0], (), begin, begin + length,
                                           self.pinyin_confidence)]
        return []

    def _latin_links(self, text: str) -> list[LinkedSpan]:
        links = []
        position = 0
        for word in text.split(" "):
            start = text.index(word, position)
            position = start + len(word)
            bucket = self.latin_by_prefix.get(word[:2], ())
            if len(word) < 5 or not word.isascii() or not bucket:
                continue
            best = process.extractOne(word, bucket, scorer=fuzz.ratio, score_cutoff=self.min_latin_score)
            if best:
                links.append(LinkedSpan(word, best[0], (), start, position, round(best[1] / 100, 3)))
        return links


class AliasLinker:
    """Links a name the KB lists among an entity's other names (别名, 英文名, 拼音 values) to that entity:
    a Chinese alias as typed, a Chinese span by its pinyin against romanised aliases (宁乡县 → 'Ningxiang
    Xian' → 玉潭), or Latin words by their folded spelling ('hua she tian zu' → 画蛇添足), of any length.

    Every alias key is in one Aho–Corasick automaton, searched over each run of Chinese characters (as typed,
    and as the run's pinyin, where a match must start and end between syllables) and over each run of other
    words in their folded form (where it must start and end on word boundaries). Chinese spans win over
    Latin ones, longer over shorter, earlier over later, as typed over by sound. The caller blanks ('\\0')
    what cannot be part of a name: question words such as 哪里 are some place's alias somewhere.
    """

    def __init__(self, aliases: Mapping[str, str], confidence: float = 0.9, pinyin_confidence: float = 0.8):
        self.aliases = aliases
        self.confidence = confidence
        self.pinyin_confidence = pinyin_confidence
        self._automaton = ahocorasick.Automaton()
        for key in aliases:
            if key:
                self._automaton.add_word(key, len(key))
        if len(self._automaton):
            self._automaton.make_automaton()

    def link(self, text: str) -> list[LinkedSpan]:
        if not len(self._automaton):
            return []
        for candidates in (self._han_candidates(text), self._latin_candidates(text)):
            if candidates:
                _, start, end, key, confidence = min(candidates)
                return [LinkedSpan(text[start:end], self.aliases[key], (), start, end, confidence)]
        return []

    def _han_candidates(self, text: str) -> list[tuple[tuple[int, int, int], int, int, str, float]]:
        """(priority, start, end, key, confidence) of the aliases found in each run of Chinese characters."""
        found = []
        for run in _HAN_RUN.finditer(text):
            begin, characters = run.start(), run.group()
            for last, length in self._automaton.iter(characters):
                if length >= MIN_ALIAS_CHARS:
                    start = begin + last - length + 1
                    found.append(((-length, start, 0), start, start + length, characters[last - length + 1:last + 1],
                                  self.confidence))
            sound, between = "", {0: 0}  # offset in the sound string -> characters before it
            for number, syllable in enumerate(lazy_pinyin(characters, v_to_u=True), start=1):
                sound += alias_key(syllable)
                between[len(sound)] = number
            for last, length in self._automaton.iter(sound):
                first = last - length + 1
                if length < MIN_PINYIN_ALIAS_LETTERS or first not in between or last + 1 not in between:
                    continue
                start, end = begin + between[first], begin + between[last + 1]
                if end - start >= MIN_ALIAS_CHARS:  # one character's sound names nothing (长 = zhang)
                    found.append(((start - end, start, 1), start, end, sound[first:last + 1], self.pinyin_confidence))
        return found

    def _latin_candidates(self, text: str) -> list[tuple[tuple[int, int, int], int, int, str, float]]:
        """(priority, start, end, key, confidence) of the aliases found in each run of other words, compared
        in `alias_key`'s folded form and kept when they start and end on word boundaries."""
        found = []
        for run in _LATIN_RUN.finditer(text):
            keyed, origin = [], []
            for index in range(run.start(), run.end()):
                for character in alias_key(text[index]):
                    keyed.append(character)
                    origin.append(index)
            key_text = "".join(keyed)
            for last, length in self._automaton.iter(key_text):
                first = last - length + 1
                start, end = origin[first], origin[last] + 1
                if length >= MIN_PINYIN_ALIAS_LETTERS and _on_word_boundaries(text, start, end):
                    found.append(((start - end, start, 0), start, end, key_text[first:last + 1], self.confidence))
        return found
