"""The knowledge record: the one value object every layer agrees on, and its validation rules.

Validation lives here (not in the readers) so that a CSV row, a JSON line and a review-database row are held
to exactly the same schema.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from kb_service.errors import InputError
from scoring.plan import TIMESTAMP_FORMAT

_CANONICAL_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
TIMESTAMP_FORMATS = (TIMESTAMP_FORMAT, "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")
REQUIRED_TEXT_FIELDS = ("kid", "knowledge", "attribute", "value", "category")
MAX_KID_LENGTH = 512
MAX_TEXT_LENGTH = 32_000
KNOWN_FIELDS = frozenset(
    (
        *REQUIRED_TEXT_FIELDS,
        "confidence",
        "ref",
        "available",
        "del",
        "create_timestamp",
        "update_timestamp",
        "expert_verified",
        "expires_at",
    )
)


def now_timestamp() -> str:
    """The current local time in the stored timestamp format."""
    return time.strftime(TIMESTAMP_FORMAT)


_EPOCH = datetime(1970, 1, 1)


@lru_cache(maxsize=65_536)
def epoch_seconds(timestamp: str) -> float:
    """A stored timestamp as epoch seconds, read as UTC as Elasticsearch reads it (any year from 1 to 9999);
    NaN when empty. Memoised: KBs loaded in batches share a few timestamps, and strptime costs ~6 µs (8 s
    per column on a 1.3M-record KB)."""
    if not timestamp:
        return math.nan
    return (datetime.strptime(timestamp, TIMESTAMP_FORMAT) - _EPOCH).total_seconds()


class RecordError(InputError):
    """A record that breaks the schema; names the field at fault so the reader can add file and line."""

    code = "invalid_record"

    def __init__(self, field: str, message: str):
        super().__init__(message, field)

    def __str__(self) -> str:
        return f"field '{self.field}': {self.message}"


@dataclass(frozen=True, slots=True)
class KnowledgeRecord:
    kid: str
    knowledge: str
    attribute: str
    value: str
    category: str
    confidence: float | None = None
    ref: str = ""
    available: int = 1
    deleted: int = 0
    create_timestamp: str = ""
    update_timestamp: str = ""
    expert_verified: int = 0
    expires_at: str = ""

    def embedding_text(self) -> str:
        """The text the encoder sees: entity, attribute and value read as one sentence."""
        return f"{self.knowledge} {self.attribute}: {self.value}"

    def embedding_key(self) -> str:
        """Key of the embedding cache: changes exactly when the embedded text changes."""
        return hashlib.blake2b(self.embedding_text().encode("utf-8"), digest_size=16).hexdigest()

    def fingerprint(self) -> str:
        """Changes whenever anything served about the record changes (text, confidence, flags, expiry): how
        a reload tells added, updated and unchanged records apart."""
        return hashlib.blake2b(json.dumps(self.to_dict(), ensure_ascii=False).encode("utf-8"),
                               digest_size=16).hexdigest()

    def to_dict(self) -> dict:
        """The public JSON shape, using the schema's field name `del` rather than the Python-safe one."""
        out = {name: getattr(self, name) for name in self.__slots__}
        out["del"] = out.pop("deleted")
        return out

    @classmethod
    def from_stored(cls, raw: dict) -> KnowledgeRecord:
        """Rebuild a record this service wrote itself (`to_dict` output in an index version): no validation,
        which makes opening a version of a million records seconds faster."""
        return cls(**{("deleted" if name == "del" else name): value for name, value in raw.items()})

    @classmethod
    def from_mapping(cls, raw: dict) -> KnowledgeRecord:
        """Build a record from loosely typed input (JSON or CSV strings), raising RecordError on the first bad field."""
        if not isinstance(raw, dict):
            raise RecordError("<record>", "expected an object with the record's fields")
        unknown = sorted(set(raw) - KNOWN_FIELDS - {"vector"})
        if unknown:
            raise RecordError(unknown[0], "unknown field")
        texts = {name: _required_text(raw, name) for name in REQUIRED_TEXT_FIELDS}
        if len(texts["kid"]) > MAX_KID_LENGTH:
            raise RecordError("kid", f"longer than {MAX_KID_LENGTH} characters")
        return cls(
            **texts,
            confidence=_confidence(raw.get("confidence")),
            ref=_optional_text(raw, "ref"),
            available=_flag(raw, "available", default=1),
            deleted=_flag(raw, "del", default=0),
            create_timestamp=_timestamp(raw, "create_timestamp"),
            update_timestamp=_timestamp(raw, "update_timestamp"),
            expert_verified=_flag(raw, "expert_verified", default=0),
            expires_at=_timestamp(raw, "expires_at"),
        )


def _required_text(raw: dict, name: str) -> str:
    value = raw.get(name)
    if value is None:
        raise RecordError(name, "missing")
    if isinstance(value, int | float) and not isinstance(value, bool) and name == "value":
        value = str(value)
    if not isinstance(value, str):
        raise RecordError(name, f"expected text, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise RecordError(name, "empty")
    if len(value) > MAX_TEXT_LENGTH:
        raise RecordError(name, f"longer than {MAX_TEXT_LENGTH} characters")
    return value


def _optional_text(raw: dict, name: str) -> str:
    value = raw.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError(name, f"expected text, got {type(value).__name__}")
    return value.strip()


def _confidence(value) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RecordError("confidence", "expected a number in [0, 1], got a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecordError("confidence", f"expected a number in [0, 1], got {value!r}") from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise RecordError("confidence", f"expected a number in [0, 1], got {value!r}")
    return number


def _flag(raw: dict, name: str, default: int) -> int:
    value = raw.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | str) and str(value).strip() in ("0", "1"):
        return int(str(value).strip())
    raise RecordError(name, f"expected 0 or 1, got {value!r}")


def _timestamp(raw: dict, name: str) -> str:
    value = raw.get(name)
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise RecordError(name, f"expected a timestamp string, got {type(value).__name__}")
    try:
        return normalise_timestamp(value)
    except RecordError as err:
        raise RecordError(name, err.message) from None


def normalise_timestamp(value: str) -> str:
    """A date and time in one of TIMESTAMP_FORMATS, or ISO 8601 (an offset is converted to UTC), as the
    stored format; RecordError when it is none."""
    if _CANONICAL_TIMESTAMP.fullmatch(value):
        try:
            datetime.fromisoformat(value)
            return value
        except ValueError:
            raise RecordError("timestamp", f"not a valid date and time: {value!r}") from None
    for fmt in TIMESTAMP_FORMATS:
        try:
            return _stored(datetime.strptime(value.strip(), fmt))
        except ValueError:
            continue
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise RecordError("timestamp", f"expected 'YYYY-MM-DD HH:MM:SS', got {value!r}") from None
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # an offset past the first or last representable moment: that moment
            moment = datetime.min if moment.year == 1 else datetime.max
    return _stored(moment)


def _stored(moment: datetime) -> str:
    """TIMESTAMP_FORMAT with the year in four digits, which strftime leaves out before 1000."""
    return moment.replace(microsecond=0).isoformat(sep=" ")
