"""Text normalisation shared by indexing and querying, so both sides see the same characters."""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """NFKC folds full-width forms to half-width; case and runs of white space are folded too."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def is_punctuation(token: str) -> bool:
    return all(unicodedata.category(ch)[0] in "PSZ" for ch in token)
