"""Model names -> local folders: the models shipped inside the package, run folders, hub ids.

    resolve_model("kermany-128")             # shipped with cxraug (the default)
    resolve_model("runs/kermany-cpu")        # a run folder from cxraug train / cxraug export
    resolve_model("someone/diffcxr-mimic")   # a Hugging Face Hub repo, downloaded when asked for

A hub id is downloaded only because the user named it (``huggingface_hub.snapshot_download``
into the usual hub cache); nothing is fetched for a shipped name or a local folder. Offline, a
hub id is a one-line error saying how to pass a local copy instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cxraug.core.errors import CxraugError

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "models"
#: Models shipped in the package (name -> folder under cxraug/assets/models).
SHIPPED = {"kermany-128": "kermany-128"}
DEFAULT_MODEL = "kermany-128"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def shipped_path(name: str) -> Path:
    return ASSETS / SHIPPED[name]


def resolve_model(ref: str | Path | None = None, field: str = "--model") -> Path:
    """A model reference (shipped name, folder, or hub id; ``None``: the default) -> its folder.

    ``field``: how errors name where the reference came from (an option or a recipe key)."""
    ref = str(ref) if ref is not None else DEFAULT_MODEL
    if ref in SHIPPED:
        path = shipped_path(ref)
        if not (path / "denoiser" / "config.json").is_file():
            raise CxraugError(f"{field} {ref}: the shipped model is missing from this install "
                              f"({path.name}/denoiser); reinstall cxraug")
        return path
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CxraugError(f"{field} {ref}: is a file; pass a run folder, a shipped model "
                              f"({', '.join(SHIPPED)}) or a hub id")
        return path
    if _HUB_ID.match(ref) and not ref.startswith((".", "~")):
        return _download(ref, field)
    raise CxraugError(f"{field} {ref}: no such run folder; pass a folder from cxraug train, a "
                      f"shipped model ({', '.join(SHIPPED)}) or a Hugging Face Hub id (owner/name)")


def _download(repo_id: str, field: str = "--model") -> Path:
    """A hub repo's files (hub cache); offline (``HF_HUB_OFFLINE``, read now, not when the hub
    library was imported) only what is cached already."""
    import textwrap

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    fix = f"download it where there is internet (`hf download {repo_id} --local-dir DIR`) and pass {field} DIR"
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=repo_id, local_files_only=offline, allow_patterns=[
            "*.json", "*.yaml", "*.safetensors", "*.npz", "*.md", "*.txt", "*.csv"]))
    except Exception as e:  # offline, unknown repo, gated, ...
        if offline:
            raise CxraugError(f"{field} {repo_id}: not a local folder nor in the hub cache, and "
                              f"HF_HUB_OFFLINE is set (nothing is downloaded); {fix}") from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CxraugError(f"{field} {repo_id}: not a local folder, and downloading it from the "
                          f"Hugging Face Hub failed ({textwrap.shorten(first, 120, placeholder=' ...')}); "
                          f"{fix}") from None
