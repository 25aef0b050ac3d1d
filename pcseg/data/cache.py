"""On-disk cache of preprocessing results (subsampled clouds, KD-trees, neighbour-limit calibrations).

An entry is identified by a *name* (a hash of what it is: source path, cell size, feature channels, class
map, ...) and validated by a *fingerprint* (what it was computed from: the size and modification time of
every source file). :meth:`DiskCache.load` returns None when the entry is missing, written by another cache
format, computed from a source that has changed since, or unreadable; the next :meth:`DiskCache.save`
replaces it. So a changed source invalidates its entries without piling up stale files.

Files of an entry ``<root>/<kind>/<name>``: ``.npz`` (arrays), optionally ``.pkl`` (one pickled object, e.g. a
``scipy.spatial.cKDTree``: rebuilding a tree costs about 15 times more than unpickling it) and ``.json``
(metadata and fingerprint, written last: an entry without it is incomplete). Every file is written to a
temporary name in the same folder and moved into place with :func:`os.replace`, which is atomic, so a reader
never sees a half-written entry and concurrent writers cannot corrupt one. The pickle is only ever read
from this cache, which only pcseg writes.

Root: ``$PCSEG_CACHE`` if set, else ``$XDG_CACHE_HOME/pcseg`` or ``~/.cache/pcseg``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Iterable
from pathlib import Path

from ..io.atomic import atomic_write

import numpy as np

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
"""Bumped whenever what the cache stores changes meaning; older entries then miss."""


def default_cache_root() -> Path:
    if os.environ.get("PCSEG_CACHE"):
        return Path(os.environ["PCSEG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pcseg"


def file_fingerprint(paths: Iterable[str | os.PathLike]) -> list[list]:
    """``[path, size, mtime_ns]`` of each file (absolute paths): changes when a file is rewritten or touched."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([os.path.abspath(p), int(st.st_size), int(st.st_mtime_ns)])
    return out


def stable_hash(obj) -> str:
    """Hash of a JSON-serialisable object (keys sorted), 24 hex digits."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _atomic_write(path: Path, write) -> None:
    atomic_write(path, write, make_dirs=True)


def _as_json(obj):
    return json.loads(json.dumps(obj, default=str))


def _read_meta(meta_path: Path, identity, fingerprint) -> dict | None:
    """The entry's metadata if it exists, has this cache format, and matches identity and fingerprint."""
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format") != CACHE_FORMAT or meta.get("identity") != _as_json(identity) \
            or meta.get("fingerprint") != _as_json(fingerprint):
        return None
    return meta


class DiskCache:
    """Entries of numpy arrays (+ one optional pickled object) under ``root``; see the module docstring."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_root()

    def _paths(self, kind: str, name: str) -> tuple[Path, Path, Path]:
        base = self.root / kind / name
        return base.with_suffix(".json"), base.with_suffix(".npz"), base.with_suffix(".pkl")

    def load(self, kind: str, identity, fingerprint) -> tuple[dict[str, np.ndarray], object, dict] | None:
        """``(arrays, obj, meta)`` of the entry for ``identity`` if it was computed from ``fingerprint``."""
        meta_path, npz_path, pkl_path = self._paths(kind, stable_hash(identity))
        meta = _read_meta(meta_path, identity, fingerprint)
        if meta is None:
            return None
        try:
            with np.load(npz_path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            obj = None
            if meta.get("has_object"):
                with open(pkl_path, "rb") as f:
                    obj = pickle.load(f)
        except Exception as e:  # a damaged entry is a miss, never a crash
            log.warning("ignoring damaged cache entry %s (%s: %s)", npz_path, type(e).__name__, e)
            return None
        return arrays, obj, meta.get("extra", {})

    def save(self, kind: str, identity, fingerprint, arrays: dict[str, np.ndarray], obj=None,
             extra: dict | None = None) -> Path | None:
        """Store an entry atomically; returns its metadata path, or None (with a warning) if the cache is not
        writable: a cache that cannot be written slows a run down but never stops it."""
        meta_path, npz_path, pkl_path = self._paths(kind, stable_hash(identity))
        meta = {"format": CACHE_FORMAT, "identity": identity, "fingerprint": fingerprint,
                "has_object": obj is not None, "extra": extra or {}}
        try:
            _atomic_write(npz_path, lambda f: np.savez(f, **arrays))
            if obj is not None:
                _atomic_write(pkl_path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL))
            text = json.dumps(meta, sort_keys=True, default=str).encode()
            _atomic_write(meta_path, lambda f: f.write(text))
        except OSError as e:
            log.warning("cannot write the preprocessing cache under %s (%s); continuing without it", self.root, e)
            return None
        return meta_path

    def load_json(self, kind: str, identity, fingerprint) -> dict | None:
        """Small JSON-only entries (e.g. calibrations): the ``extra`` dict saved with :meth:`save_json`."""
        meta = _read_meta(self._paths(kind, stable_hash(identity))[0], identity, fingerprint)
        return None if meta is None else meta.get("extra")

    def save_json(self, kind: str, identity, fingerprint, extra: dict) -> Path | None:
        meta_path, _, _ = self._paths(kind, stable_hash(identity))
        meta = {"format": CACHE_FORMAT, "identity": identity, "fingerprint": fingerprint, "extra": extra}
        try:
            text = json.dumps(meta, sort_keys=True, default=str).encode()
            _atomic_write(meta_path, lambda f: f.write(text))
        except OSError as e:
            log.warning("cannot write the cache under %s (%s); continuing without it", self.root, e)
            return None
        return meta_path
