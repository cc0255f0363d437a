"""``--config.auto-reload-interval``: the config file and the files its ``target_files`` match,
checked by content every interval; a change reloads the config as SIGHUP does."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path

import structlog

from exporter.bounded import CONFIG_FILE_MAX_BYTES, FileProblem, read_bytes
from exporter.config import TooManyTargetFiles, target_file_paths
from exporter.service import Exporter

log = structlog.get_logger("exporter.autoreload")

MIN_INTERVAL = 1.0
"""The shortest interval: each check reads every file."""


def fingerprint(config_path: Path, target_files: Sequence[str]) -> bytes:
    """A digest of the config file's content and of each file ``target_files`` matches (their
    paths too, so that a file added or removed counts). A file that cannot be read counts by
    why, so that it becoming readable is a change."""
    digest = hashlib.sha256()
    try:
        paths, _ = target_file_paths(target_files, config_path.parent)
    except TooManyTargetFiles as exc:
        paths = []
        digest.update(str(exc).encode())
    for path in [config_path, *paths]:
        digest.update(str(path).encode("utf-8", "surrogateescape") + b"\0")
        try:
            content = read_bytes(path, CONFIG_FILE_MAX_BYTES)
        except FileProblem as exc:
            content = f"\0{exc}".encode()
        digest.update(hashlib.sha256(content).digest())
    return digest.digest()


async def watch(exporter: Exporter, interval: float, baseline: bytes | None = None) -> None:
    """Every ``interval`` seconds, reload the config when its files' content changed since the
    last check (or since ``baseline``, a :func:`fingerprint` taken when the running config was
    read). A reload that fails keeps the previous config (as on SIGHUP) and is not tried again
    until the content changes again."""
    path = exporter.config_path
    if path is None:
        return
    last = baseline
    if last is None:
        last = await asyncio.to_thread(fingerprint, path, exporter.config.target_files)
    while True:
        await asyncio.sleep(interval)
        # The globs of the running config: after a reload that changes them, the next check
        # differs and reloads once more, finding the config unchanged.
        current = await asyncio.to_thread(fingerprint, path, exporter.config.target_files)
        if current == last:
            continue
        last = current
        log.info("config files changed; reloading", config=str(path))
        await exporter.reload()
