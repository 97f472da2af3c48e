"""A cache of report-encoder outputs, so each distinct report is encoded once.

Entries are keyed by ``sha256(report text)`` under a folder named after the report encoder's
``encoder_id`` (text encoder + squeeze weights), so a retuned encoder never reads stale
embeddings. Layout: ``<root>/<encoder_id[:16]>/<sha[:2]>/<sha>.safetensors`` holding ``global``
``[D']`` and ``cond`` ``[K, D]``. A bounded in-memory dict sits in front of the disk.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """``(global [D'], cond [K, D])`` per report text for one report encoder.

    ``root=None`` keeps entries in memory only. ``dtype`` is the storage type (float32 keeps
    cached and fresh outputs bit-identical; float16 halves the disk). ``memory_items`` bounds the
    in-memory layer (oldest entries are dropped first).
    """

    def __init__(self, root: str | Path | None, encoder_id: str, dtype: torch.dtype = torch.float32,
                 memory_items: int = 1024):
        self.folder = Path(root) / encoder_id[:16] if root is not None else None
        self.encoder_id, self.dtype, self.memory_items = encoder_id, dtype, memory_items
        self._memory: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, text: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        key = text_key(text)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.folder is not None and self._path(key).is_file():
            t = load_file(str(self._path(key)))
            self._remember(key, (t["global"], t["cond"]))
            return self._memory[key]
        return None

    def put(self, text: str, global_emb: torch.Tensor, cond: torch.Tensor) -> None:
        key = text_key(text)
        entry = (global_emb.detach().to("cpu", self.dtype).contiguous(),
                 cond.detach().to("cpu", self.dtype).contiguous())
        self._remember(key, entry)
        if self.folder is not None:
            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({"global": entry[0], "cond": entry[1]}, str(tmp),
                      metadata={"encoder_id": self.encoder_id})
            tmp.replace(path)

    def _remember(self, key: str, entry: tuple[torch.Tensor, torch.Tensor]) -> None:
        self._memory[key] = entry
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    @torch.no_grad()
    def encode(self, encoder, texts: Sequence[str], batch_size: int = 32
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``encoder.encode`` with caching: ``(global [B, D'], cond [B, K, D])`` on the CPU.

        ``encoder`` is a frozen :class:`~cxraug.text.squeeze.ReportEncoder` whose ``encoder_id``
        matches this cache; only texts not cached yet are encoded (each distinct text once).
        """
        if encoder.encoder_id != self.encoder_id:
            raise ValueError("this cache belongs to another report encoder (encoder_id differs)")
        texts = list(texts)
        found = {t: self.get(t) for t in dict.fromkeys(texts)}
        todo = [t for t, v in found.items() if v is None]
        self.hits += len(found) - len(todo)  # distinct texts
        self.misses += len(todo)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            g, c = encoder.encode(chunk)
            for i, t in enumerate(chunk):
                self.put(t, g[i], c[i])
                found[t] = self._memory[text_key(t)]
        return (torch.stack([found[t][0] for t in texts]), torch.stack([found[t][1] for t in texts]))

    @classmethod
    def for_encoder(cls, root: str | Path | None, encoder, **kwargs) -> EmbeddingCache:
        return cls(root, encoder.encoder_id, **kwargs)
