"""Preprocessing cache: decode and resize every image once, then memory-map ``uint8`` arrays.

The store for a dataset at one size is ``<cache_dir>/images/<key>.u8`` (raw ``uint8
[N, size, size]``) plus ``<key>.json``. The key hashes the image paths with their byte sizes and
modification times, the size, the resize mode and the cache format version, so changing,
adding or removing any input file (or asking for another size) builds a new store; a stale one
is never read. Stores are written to a temporary file and renamed when complete, so an
interrupted build leaves nothing that could be mistaken for a finished store.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from cxraug.core.errors import DataError
from cxraug.data.datasets import CXRDataset
from cxraug.data.transforms import ImageReadError, load_grayscale, resize_square

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$CXRAUG_CACHE`` or ``~/.cache/cxraug``."""
    return Path(os.environ.get("CXRAUG_CACHE", Path.home() / ".cache" / "cxraug"))


def content_key(paths: list[Path], size: int, mode: str) -> str:
    """Hash of the inputs that determine the cached pixels."""
    h = hashlib.sha256(f"v{FORMAT_VERSION}|{size}|{mode}".encode())
    for p in paths:
        try:
            st = p.stat()
            h.update(f"|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
        except FileNotFoundError:
            h.update(f"|{p}|missing".encode())
    return h.hexdigest()[:20]


def cached_images(ds: CXRDataset, size: int, cache_dir: str | Path | None = None,
                  mode: str = "pad", skip_bad: bool = False,
                  progress: bool = True) -> tuple[np.ndarray, CXRDataset, list[str]]:
    """Return ``(images, ds_kept, skipped)`` with ``images`` a read-only ``uint8 [N, size, size]``
    memory map aligned with ``ds_kept``.

    Unreadable images raise :class:`~cxraug.core.errors.DataError` naming the file, unless
    ``skip_bad`` is set; then they are left out of ``ds_kept`` and listed in ``skipped``.
    """
    if size < 8 or size > 4096:
        raise DataError(f"image size {size}: must be between 8 and 4096 pixels")
    folder = Path(cache_dir or default_cache_dir()) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    key = content_key(ds.paths, size, mode)
    store, meta_path = folder / f"{key}.u8", folder / f"{key}.json"
    if not (store.is_file() and meta_path.is_file()):
        _build(ds, size, mode, store, meta_path, skip_bad, progress)
    meta = json.loads(meta_path.read_text())
    bad = set(meta["bad"])
    if bad and not skip_bad:  # a store built with skip_bad: say why the first one is bad
        first = ds.paths[min(bad)]
        try:
            load_grayscale(first)
            why = f"{first}: unreadable image"
        except ImageReadError as e:
            why = str(e)
        raise DataError(f"{why} ({len(bad)} unreadable in total), or pass --skip-bad to leave "
                        "unreadable images out")
    images = np.memmap(store, dtype=np.uint8, mode="r", shape=(meta["n"], size, size))
    if not bad:
        return images, ds, []
    keep = np.array([i not in bad for i in range(len(ds))])
    skipped = [str(ds.paths[i]) for i in sorted(bad)]
    return images[keep], ds.select(keep), skipped


def _build(ds: CXRDataset, size: int, mode: str, store: Path, meta_path: Path,
           skip_bad: bool, progress: bool) -> None:
    from rich.progress import Progress

    tmp = store.with_suffix(f".tmp{os.getpid()}")
    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(len(ds), size, size))
    bad: list[int] = []
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"caching {ds.name} at {size}px", total=len(ds))
            for i, path in enumerate(ds.paths):
                try:
                    out[i] = resize_square(load_grayscale(path), size, mode)
                except ImageReadError as e:
                    if not skip_bad:
                        raise DataError(f"{e}, or pass --skip-bad to leave unreadable "
                                        "images out") from None
                    bad.append(i)
                bar.advance(task)
        out.flush()
        del out
        tmp.replace(store)
        meta_path.write_text(json.dumps({"n": len(ds), "size": size, "mode": mode, "bad": bad,
                                         "dataset": ds.name, "version": FORMAT_VERSION}))
    finally:
        if tmp.exists():
            tmp.unlink()
