"""LNFS results: :class:`FilterResult`, one row per image, and what it writes (the keep/drop CSV,
a summary JSON and a contact sheet of the dropped images); see :mod:`cxraug.diffusion.lnfs`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxraug.core import config as C
from cxraug.data import labels as L
from cxraug.diffusion.lnfs_config import LNFSConfig

STAGES = ("kmeans", "manifold", "discriminator", "kept")
_SHORT = {"kmeans": "km", "manifold": "mf", "discriminator": "dc", "kept": ""}


@dataclass
class FilterResult:
    """One row per image, aligned with the latents given to :func:`~cxraug.diffusion.lnfs.run_lnfs`.

    ``table`` columns: ``id, path, keep, noise_score`` (in [0, 1]), ``kmeans_z, global_z,
    recon_z, stage`` (the stage that decided a drop: kmeans / manifold / discriminator; ``kept``
    otherwise), ``reason``, then ``cluster, cluster_size, kmeans_flag, manifold_flag,
    pseudo_noisy, recon_error``. ``info`` holds run-level facts (k, cluster sizes, counts).
    """

    table: pd.DataFrame
    config: LNFSConfig
    info: dict[str, Any]

    @property
    def keep(self) -> np.ndarray:
        return self.table["keep"].to_numpy(dtype=bool)

    def write_csv(self, path: str | Path) -> Path:
        """The keep/drop list: ``id, keep (1/0), noise_score, stage, reason``."""
        path = Path(path)
        df = self.table[["id", "keep", "noise_score", "stage", "reason"]].copy()
        df["keep"] = df["keep"].astype(int)
        df["noise_score"] = df["noise_score"].round(4)
        df.to_csv(path, index=False)
        return path

    def summary(self, labels: np.ndarray | None = None) -> dict[str, Any]:
        """Removal counts overall, per deciding stage and per positive label (raw ``[N, 14]``)."""
        t = self.table
        dropped = ~self.keep

        def counts(mask: np.ndarray) -> dict[str, Any]:
            d = int((dropped & mask).sum())
            out = {"images": int(mask.sum()), "dropped": d,
                   "dropped_frac": round(d / max(1, int(mask.sum())), 4)}
            out.update({s: int(((t["stage"] == s).to_numpy() & mask).sum()) for s in STAGES[:3]})
            return out

        out = {"overall": counts(np.ones(len(t), dtype=bool)), "info": self.info,
               "config": C.to_dict(self.config), "per_label": {}}
        if labels is not None:
            pos = np.asarray(labels) == L.POSITIVE
            for j, name in enumerate(L.OBSERVATIONS):
                if pos[:, j].any():
                    out["per_label"][name] = counts(pos[:, j])
            if (~pos.any(1)).any():
                out["per_label"]["(no positive label)"] = counts(~pos.any(1))
        top = t[dropped].sort_values("noise_score", ascending=False, kind="stable").head(20)
        out["top_dropped"] = [{"id": r.id, "noise_score": round(float(r.noise_score), 4),
                               "stage": r.stage, "reason": r.reason} for r in top.itertuples()]
        return out

    def write_summary(self, path: str | Path, labels: np.ndarray | None = None) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.summary(labels), indent=2) + "\n")
        return path

    def write_contact_sheet(self, images: np.ndarray, path: str | Path, thumb: int = 64,
                            columns: int = 8) -> Path:
        """A grid of the dropped images (``images``: ``uint8 [N, H, W]``, row-aligned), noisiest
        first, at most ``config.sheet_max``, each captioned with its score and deciding stage
        (``km`` K-means, ``mf`` manifold, ``dc`` discriminator)."""
        from PIL import Image, ImageDraw

        path = Path(path)
        t = self.table.reset_index(drop=True)
        rows = t[~self.keep].sort_values("noise_score", ascending=False, kind="stable")
        rows = rows.head(self.config.sheet_max)
        caption = 12
        if rows.empty:
            sheet = Image.new("L", (thumb * 3, thumb // 2), 0)
            ImageDraw.Draw(sheet).text((4, 4), "LNFS: no images dropped", fill=255)
            sheet.save(path)
            return path
        cols = min(columns, len(rows))
        nrow = -(-len(rows) // cols)
        sheet = Image.new("L", (cols * thumb, nrow * (thumb + caption)), 0)
        draw = ImageDraw.Draw(sheet)
        for k, (i, r) in enumerate(rows.iterrows()):
            x, y = (k % cols) * thumb, (k // cols) * (thumb + caption)
            tile = Image.fromarray(np.asarray(images[i], dtype=np.uint8)).resize((thumb, thumb))
            sheet.paste(tile, (x, y))
            draw.text((x + 2, y + thumb), f"{r.noise_score:.2f} {_SHORT[r.stage]}", fill=255)
        sheet.save(path)
        return path

    def save(self, out: str | Path, labels: np.ndarray | None = None,
             images: np.ndarray | None = None) -> dict[str, Path]:
        """Write ``keep.csv``, ``summary.json`` and (given images) ``dropped.png`` into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        files = {"csv": self.write_csv(out / "keep.csv"),
                 "summary": self.write_summary(out / "summary.json", labels)}
        if images is not None:
            files["sheet"] = self.write_contact_sheet(images, out / "dropped.png")
        return files
