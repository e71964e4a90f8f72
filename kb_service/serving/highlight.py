"""Highlights: the spans of a hit's knowledge, attribute and value that the query matched, marked with tags.

The field is cut by the served version's segmenter, the one that built the text index, and a token is marked
when the query's text clauses hold it, so the UI bolds what the engine matched; a field the query's linked
entity or attribute names whole is marked whole, as its keyword clause matched it. The record's text is
HTML-escaped and the tags are not, so a front end may insert the result as markup.
"""

from __future__ import annotations

import html

from query_understanding import ParsedQuery
from query_understanding.normalise import fold_character
from query_understanding.segmenter import Segmenter


def _normalised_chars(text: str) -> tuple[str, list[int]]:
    """The text folded character by character as the segmenter folds it (width, case, script), with the
    original position of every folded character, so spans found in the folded text map back."""
    folded: list[str] = []
    origin: list[int] = []
    for position, char in enumerate(text):
        for piece in fold_character(char):
            folded.append(piece)
            origin.append(position)
    return "".join(folded), origin


def matched_spans(text: str, terms: set[str], segmenter: Segmenter) -> list[tuple[int, int]]:
    """(start, end) in `text` of every token the segmenter cuts from it that `terms` holds, adjacent spans
    merged."""
    folded, origin = _normalised_chars(text)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for token in segmenter.tokens(text):
        found = folded.find(token, cursor)
        if found < 0:
            continue
        cursor = found + len(token)
        if token in terms:
            start, end = origin[found], origin[cursor - 1] + 1
            if spans and spans[-1][1] >= start:
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
    return spans


def mark(text: str, spans: list[tuple[int, int]], pre_tag: str, post_tag: str) -> str:
    out: list[str] = []
    position = 0
    for start, end in spans:
        out.append(html.escape(text[position:start]))
        out.append(pre_tag + html.escape(text[start:end]) + post_tag)
        position = end
    out.append(html.escape(text[position:]))
    return "".join(out)


def query_terms(parsed: ParsedQuery) -> set[str]:
    """The tokens the query's text clauses search for: its content words (all words when it has none) and
    the tokens of every linked entity."""
    terms = set(parsed.content_tokens or parsed.tokens)
    for entity in parsed.entities:
        terms.update(entity.tokens)
    return terms


def highlights(record: dict, parsed: ParsedQuery, segmenter: Segmenter, fields: tuple[str, ...], pre_tag: str,
               post_tag: str) -> dict[str, str]:
    """Each of `fields` of `record` in which the query matched something, marked; the others left out."""
    whole = {"knowledge": {e.name for e in parsed.entities}, "attribute": {a.name for a in parsed.attributes},
             "value": {parsed.original.strip()}}
    terms = query_terms(parsed)
    out = {}
    for field in fields:
        text = record.get(field)
        if not isinstance(text, str) or not text:
            continue
        spans = [(0, len(text))] if text in whole[field] else matched_spans(text, terms, segmenter)
        if spans:
            out[field] = mark(text, spans, pre_tag, post_tag)
    return out
