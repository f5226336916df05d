"""Scores that survive between active-learning requests: per image and per model version, in one JSON file.

Scoring an image means running the model on it; a strategy that scored the whole datastore at every request would
take minutes to answer. :class:`ScoreCache` keeps each image's score with the signature of the image file (size
and modification time in nanoseconds), for one model version (:func:`model_version`: the SHA-256 of the weights
file and of the records beside it that change the scores). An entry is used only while the file's signature is
the same; a new model version empties the cache. The file is written atomically
(:func:`~custom_components.core.atomic.write_json_atomic`), so a server stopped in the middle of a write leaves the
previous file, never a torn one; the cache is only a cache, so a file that cannot be read or written costs a
warning and a re-scoring, never an error.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from custom_components.core.atomic import write_json_atomic
from custom_components.core.recipe import weights_sha256

logger = logging.getLogger(__name__)

__all__ = ["CACHE_FORMAT", "file_signature", "FileDigests", "model_version", "ScoreCache"]

#: version of the cache file's layout; a file of another layout is ignored (and rewritten)
CACHE_FORMAT = 1


def file_signature(path: str) -> dict[str, int]:
    """What identifies a version of a file without reading it: ``size`` in bytes and ``mtime_ns``.

    Raises:
        OSError: when the file cannot be stat'ed (absent, no permission).
    """
    stat = os.stat(path)
    return {"size": int(stat.st_size), "mtime_ns": int(stat.st_mtime_ns)}


class FileDigests:
    """SHA-256 of files, read again only when a file's signature (:func:`file_signature`) changes.

    A 45 MB checkpoint takes a tenth of a second to hash; a strategy asks for the model version at every request.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[dict[str, int], str]] = {}

    def digest(self, path: str) -> str | None:
        """Hex SHA-256 of ``path``, or None when there is no such file."""
        try:
            signature = file_signature(path)
        except FileNotFoundError:
            self._known.pop(path, None)
            return None
        known = self._known.get(path)
        if known is not None and known[0] == signature:
            return known[1]
        digest = weights_sha256(path)
        # the file may have been replaced while it was read: keep the signature it had before, so a change during
        # the read makes the next call read it again
        self._known[path] = (signature, digest)
        return digest


def model_version(files: Sequence[str], digests: FileDigests) -> str:
    """One string for the content of a model's files: the weights and the records beside them.

    Args:
        files: the weights file first, then the files that change what the scores are (the recipe, which decides
            the network and its input size; the IFE calibration, whose temperatures and operating point change the
            probabilities and the refer decision). Absent files count as absent.
        digests: where the files' SHA-256 are remembered.

    Returns:
        ``sha256:<hex>`` over the files' names and digests.
    """
    parts = [[os.path.basename(path), digests.digest(path)] for path in files]
    return "sha256:" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()


class ScoreCache:
    """The scores of one strategy, for one model version, in memory and in ``path``.

    Layout of the file::

        {"format": 1, "strategy": "oct_entropy", "score_version": "...", "model_version": "sha256:...",
         "written": "2026-01-02T03:04:05+00:00",
         "images": {"<image id>": {"file": {"size": 1234, "mtime_ns": ...}, "score": {...}},
                    "<image id>": {"file": {...}, "error": "why it could not be scored"}}}

    A failure is kept like a score, so that an unreadable file is not tried again at every request; it is tried
    again when the file or the model changes.

    Args:
        path: the JSON file, or None to keep the scores in memory only.
        strategy: the strategy's name (written in the file, checked when it is read).
        score_version: what the scores mean (a strategy changes it when it scores differently); a file of another
            score version is ignored.
    """

    def __init__(self, path: str | None, strategy: str, score_version: str) -> None:
        self.path = path
        self.strategy = strategy
        self.score_version = score_version
        self.model_version: str | None = None
        self.entries: dict[str, dict[str, Any]] = {}
        self._loaded = False
        self._dirty = False
        self._write_failed = False

    def _load(self) -> None:
        self._loaded = True
        if not self.path or not os.path.isfile(self.path):
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                content = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            logger.warning(f"{self.strategy}: score cache {self.path} is unreadable ({err}); scoring again.")
            return
        if not isinstance(content, dict) or not isinstance(content.get("images"), dict):
            logger.warning(f"{self.strategy}: score cache {self.path} is not a score cache; scoring again.")
            return
        wanted = (CACHE_FORMAT, self.strategy, self.score_version)
        if (content.get("format"), content.get("strategy"), content.get("score_version")) != wanted:
            logger.info(f"{self.strategy}: score cache {self.path} was written by another version; scoring again.")
            return
        self.model_version = content.get("model_version")
        self.entries = {k: v for k, v in content["images"].items() if _valid_entry(v)}

    def use_model(self, version: str) -> int:
        """Make ``version`` the cache's model version (reading the file the first time).

        Returns:
            how many entries were dropped because they belong to another model version.
        """
        if not self._loaded:
            self._load()
        if version == self.model_version:
            return 0
        dropped = len(self.entries)
        self.entries = {}
        self.model_version = version
        self._dirty = True
        return dropped

    def get(self, image_id: str, signature: Mapping[str, int]) -> dict[str, Any] | None:
        """The entry of ``image_id`` (``{"score": ...}`` or ``{"error": ...}``) if it was made for this file."""
        entry = self.entries.get(image_id)
        return entry if entry is not None and entry.get("file") == dict(signature) else None

    def put(
        self, image_id: str, signature: Mapping[str, int], score: Mapping[str, Any] | None = None, error: str = ""
    ) -> None:
        """Remember the score of ``image_id`` (or why it could not be scored) for this version of its file."""
        entry: dict[str, Any] = {"file": dict(signature)}
        if error:
            entry["error"] = error
        else:
            entry["score"] = dict(score or {})
        self.entries[image_id] = entry
        self._dirty = True

    def keep_only(self, image_ids: Iterable[str]) -> None:
        """Forget the images that are no longer in the datastore."""
        keep = set(image_ids)
        gone = [k for k in self.entries if k not in keep]
        for image_id in gone:
            del self.entries[image_id]
        self._dirty = self._dirty or bool(gone)

    def save(self) -> None:
        """Write the file if anything changed since the last write; a failure is logged once and the scores stay in
        memory."""
        if not self._dirty or not self.path:
            return
        content = {
            "format": CACHE_FORMAT,
            "strategy": self.strategy,
            "score_version": self.score_version,
            "model_version": self.model_version,
            "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "images": self.entries,
        }
        try:
            write_json_atomic(content, self.path, indent=None)
        except OSError as err:
            if not self._write_failed:
                logger.warning(
                    f"{self.strategy}: cannot write the score cache {self.path} ({err}); scores are kept in memory "
                    "only and computed again after a restart (set --conf strategy_cache_dir to a writable folder)."
                )
            self._write_failed = True
            return
        self._write_failed = False
        self._dirty = False


def _valid_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("file"), dict)
        and (isinstance(entry.get("score"), dict) or isinstance(entry.get("error"), str))
    )
