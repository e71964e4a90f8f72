"""The embedded engine's versions on disk and the `CURRENT` pointer that names the served one.

A version is built in a hidden `.building-*` folder, renamed into place only when complete, and served only
after `CURRENT` is replaced atomically (write, fsync, rename). A crash at any point leaves `CURRENT` naming
the old, complete version; the leftovers of a crashed build are removed by the next build.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np

from kb_service.config import EngineConfig
from kb_service.engines.base import VersionInfo, VersionNotFoundError, removable_versions
from kb_service.engines.embedded.version import (
    INDEX_FORMAT,
    MANIFEST,
    EmbeddedVersion,
    file_digests,
    write_version,
)
from kb_service.errors import ConflictError
from kb_service.locking import exclusive_lock
from kb_service.records import KnowledgeRecord
from query_understanding.dictionary import KbDictionary


class BuildInProgressError(ConflictError):
    """Another process is building a version in the same data directory."""

    code = "build_running"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EmbeddedEngine:
    """Versions as folders under `root/versions`, served through `root/CURRENT`; no server involved."""

    def __init__(self, root: Path, engine: EngineConfig):
        self.root = Path(root)
        self.engine = engine
        self.versions_dir = self.root / "versions"
        self.pointer = self.root / "CURRENT"

    def reachable(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing stays open: versions are files, opened by whoever serves them."""

    def exclusive(self, name: str, refusal: Callable[[str], Exception]) -> AbstractContextManager[None]:
        """A `flock` in the engine's folder: every process on the host that serves this data directory."""
        return exclusive_lock(self.root / f"{name}.lock", lambda held: refusal(f"a process holds {held}"))

    def open(self, name: str) -> EmbeddedVersion:
        return EmbeddedVersion(self.path_of(name), self.engine)

    def build(self, records: list[KnowledgeRecord], vectors: np.ndarray, segmented: Callable[[str], str],
              dictionary: KbDictionary, centroids: dict[str, np.ndarray], manifest: dict) -> str:
        with self.building() as build_dir:
            write_version(build_dir, records, vectors, segmented, dictionary, centroids, self.engine)
            return self.commit(build_dir, {**manifest, "format": INDEX_FORMAT})

    def size_bytes(self, name: str) -> int:
        return sum(p.stat().st_size for p in self.path_of(name).rglob("*") if p.is_file())

    def current_name(self) -> str | None:
        try:
            name = self.pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name if (self.versions_dir / name / MANIFEST).is_file() else None

    def path_of(self, name: str) -> Path:
        return self.versions_dir / name

    @contextmanager
    def building(self) -> Iterator[Path]:
        """A fresh build folder under an exclusive lock; removed if the build does not commit it."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.root / "build.lock", lambda held: BuildInProgressError(f"another build holds {held}")):
            for leftover in self.versions_dir.glob(".building-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            build_dir = self.versions_dir / f".building-{uuid.uuid4().hex[:8]}"
            build_dir.mkdir()
            try:
                yield build_dir
            finally:
                if build_dir.exists():
                    shutil.rmtree(build_dir, ignore_errors=True)

    def commit(self, build_dir: Path, manifest: dict) -> str:
        """Seal a complete build as the next numbered version (not yet served), its files' sizes and checksums
        in the manifest so that damage is caught when the version is opened."""
        numbers = [int(p.name[1:7]) for p in self.versions_dir.glob("v[0-9]*") if p.name[1:7].isdigit()]
        name = f"v{max(numbers, default=0) + 1:06d}-{time.strftime('%Y%m%dT%H%M%S')}"
        manifest = {**manifest, "name": name, "files": file_digests(build_dir)}
        (build_dir / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
        for path in build_dir.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        os.rename(build_dir, self.versions_dir / name)
        _fsync_dir(self.versions_dir)
        return name

    def switch(self, name: str) -> None:
        if not (self.versions_dir / name / MANIFEST).is_file():
            raise VersionNotFoundError(f"no complete version named {name!r}", "version")
        temporary = self.root / f"CURRENT.{uuid.uuid4().hex[:8]}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(name)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.pointer)
        _fsync_dir(self.root)

    def versions(self) -> list[VersionInfo]:
        current = self.current_name()
        out = []
        for path in sorted(self.versions_dir.glob("v[0-9]*")):
            manifest_path = path / MANIFEST
            if manifest_path.is_file():
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
                out.append(VersionInfo(path.name, path, manifest, path.name == current))
        return out

    def discard(self, name: str) -> None:
        """Delete a version that must never be served (a reload's gates refused it)."""
        if name == self.current_name():
            raise ConflictError(f"{name} is the served version", "version")
        shutil.rmtree(self.path_of(name), ignore_errors=True)

    def prune(self, keep: int) -> list[str]:
        """Delete the oldest versions beyond `keep`, never the served one."""
        doomed = removable_versions(self.versions(), keep)
        for version in doomed:
            shutil.rmtree(self.path_of(version.name), ignore_errors=True)
        return [v.name for v in doomed]
