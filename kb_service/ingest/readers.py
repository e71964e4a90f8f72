"""Read knowledge files (JSONL, CSV, optionally gzipped) into validated records, with file:line on every error.

Reading is all-or-nothing by default: any bad line fails the load before an index is touched. With
quarantine on, bad lines are set aside (and written to a reject file by the caller) and the rest loads.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kb_service.errors import InputError
from kb_service.progress import Progress
from kb_service.records import KnowledgeRecord, RecordError

MAX_ERRORS_REPORTED = 20


@dataclass(frozen=True)
class RejectedLine:
    path: str
    line: int
    field: str
    message: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: field '{self.field}': {self.message}"

    def to_dict(self) -> dict:
        return {"path": self.path, "line": self.line, "field": self.field, "error": self.message,
                "text": self.text}


@dataclass
class ReadResult:
    records: list[KnowledgeRecord] = field(default_factory=list)
    rejected: list[RejectedLine] = field(default_factory=list)
    replaced: int = 0


class KnowledgeFileError(InputError):
    """Raised when input is refused as a whole; the message lists the first bad lines with file and line."""

    def __init__(self, rejected: list[RejectedLine]):
        self.rejected = rejected
        shown = "\n".join(f"  {r}" for r in rejected[:MAX_ERRORS_REPORTED])
        more = len(rejected) - MAX_ERRORS_REPORTED
        tail = f"\n  … and {more} more" if more > 0 else ""
        super().__init__(f"{len(rejected)} invalid record(s), nothing was loaded:\n{shown}{tail}")


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if kind in (".csv", ".tsv"):
        return kind[1:]
    raise KnowledgeFileError([RejectedLine(str(path), 0, "<file>", "unknown format: use .jsonl, .csv or .tsv "
                                           "(optionally .gz)", "")])


def _raw_rows(path: Path) -> Iterator[tuple[int, str, dict | None, str | None]]:
    """Yield (line number, line text, parsed mapping or None, parse error or None)."""
    fmt = _format_of(path)
    with _open_text(path) as handle:
        if fmt == "jsonl":
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, line.rstrip("\n"), json.loads(line), None
                except json.JSONDecodeError as err:
                    yield number, line.rstrip("\n"), None, f"invalid JSON: {err.msg} at column {err.colno}"
            return
        reader = csv.DictReader(handle, delimiter="\t" if fmt == "tsv" else ",")
        for row in reader:
            number = reader.line_num
            text = ",".join(v or "" for v in row.values() if isinstance(v, str))
            if None in row:
                yield number, text, None, "more columns than the header"
                continue
            yield number, text, {k: v for k, v in row.items() if v is not None}, None


def read_records(paths: Iterable[str | Path], quarantine: bool = False) -> ReadResult:
    """Validate every line of every file; later duplicates of a kid must carry a newer update_timestamp."""
    result = ReadResult()
    position: dict[str, tuple[int, str]] = {}
    progress = Progress("reading records", None)
    for path in map(Path, paths):
        if not path.is_file():
            raise KnowledgeFileError([RejectedLine(str(path), 0, "<file>", "no such file", "")])
        for number, text, raw, parse_error in _raw_rows(path):
            progress.advance(1)
            try:
                if parse_error or raw is None:
                    raise RecordError("<line>", parse_error or "not a record")
                record = KnowledgeRecord.from_mapping(raw)
                previous = position.get(record.kid)
                if previous is not None:
                    index, where = previous
                    if record.update_timestamp <= result.records[index].update_timestamp:
                        raise RecordError("kid", f"duplicate of {where} without a newer update_timestamp")
                    result.records[index] = record
                    result.replaced += 1
                    continue
                position[record.kid] = (len(result.records), f"{path}:{number}")
                result.records.append(record)
            except RecordError as err:
                result.rejected.append(RejectedLine(str(path), number, err.field or "<record>", err.message, text))
    if result.rejected and (not quarantine or not result.records):
        raise KnowledgeFileError(result.rejected)
    return result
