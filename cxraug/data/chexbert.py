"""CheXbert (Smit et al. 2020): a BERT report labeler with the same output as the rule labeler.

Architecture, as in stanfordmlgroup/CheXbert ``src/models/bert_labeler.py``: ``BertModel``
(bert-base-uncased geometry, built from a local config, never downloaded) -> the [CLS] hidden
state -> dropout -> 14 linear heads. Heads 0-12 (the 13 observations before No Finding, in
:data:`cxraug.data.labels.OBSERVATIONS` order) have 4 classes ``blank, positive, negative,
uncertain``; head 13 (No Finding) has 2 classes ``blank, positive``. Arg-max classes map to the
raw coding: blank -> NaN, positive -> 1, negative -> 0, uncertain -> -1.

Weights are never downloaded. Accepted:

* the published ``chexbert.pth`` (a training checkpoint; ``model_state_dict`` keys prefixed
  ``module.`` by DataParallel), read with ``torch.load(weights_only=True)``;
* a cxraug component folder (``config.json`` + ``model.safetensors``, from ``save_pretrained``);
* an HF-style folder: a BERT ``config.json`` and ``model.safetensors`` / ``pytorch_model.bin`` /
  ``chexbert.pth`` with ``bert.*`` and ``linear_heads.*`` keys.

The tokenizer is read from a local folder holding bert-base-uncased's ``vocab.txt``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cxraug.core.artifacts import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    Component,
    load_component,
    register,
    torch_load_plain,
)
from cxraug.core.errors import WeightsError
from cxraug.data import labels as L
from cxraug.data.labeler_vocab import text_problem
from cxraug.data.reports import labeling_text

#: bert-base-uncased's configuration (what the published chexbert.pth was trained with).
BERT_BASE_UNCASED: dict[str, Any] = {
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
    "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
}
HEAD_CLASSES: tuple[str, ...] = ("blank", "positive", "negative", "uncertain")
_CLASS_TO_RAW = np.array([np.nan, L.POSITIVE, L.NEGATIVE, L.UNCERTAIN], dtype=np.float32)

WEIGHTS_HELP = ("pass --weights with the published chexbert.pth (Smit et al. 2020, "
                "github.com/stanfordmlgroup/CheXbert) or a folder with config.json + "
                "model.safetensors; cxraug never downloads weights")
TOKENIZER_HELP = ("pass --tokenizer with a local folder holding bert-base-uncased's vocab.txt "
                  "(30,522 WordPiece lines; tokenizer_config.json optional)")


@register
class CheXbertModel(Component):
    """BERT + 14 heads. ``forward(input_ids [B, T], attention_mask [B, T])`` -> list of 14 logit
    tensors, ``[B, 4]`` for the first 13 observations and ``[B, 2]`` for No Finding."""

    def __init__(self, bert_config: dict[str, Any] | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        self.save_args(locals())
        from transformers import BertConfig, BertModel

        cfg = BertConfig(**{**BERT_BASE_UNCASED, **(bert_config or {})})
        self.bert = BertModel(cfg, add_pooling_layer=True)  # the pooler is in the checkpoint
        self.dropout = nn.Dropout(dropout)
        h = cfg.hidden_size
        self.linear_heads = nn.ModuleList(
            [nn.Linear(h, len(HEAD_CLASSES)) for _ in range(L.N_OBS - 1)] + [nn.Linear(h, 2)])

    @property
    def max_length(self) -> int:
        return min(512, self.bert.config.max_position_embeddings)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        cls = self.bert(input_ids, attention_mask=attention_mask)[0][:, 0, :]
        cls = self.dropout(cls)
        return [head(cls) for head in self.linear_heads]

    @torch.no_grad()
    def predict(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
        """Raw labels ``float32 [B, 14]`` (1 / 0 / -1 / NaN) from the arg-max class of each head."""
        classes = torch.stack([o.argmax(dim=1) for o in self(input_ids, attention_mask)], dim=1)
        return _CLASS_TO_RAW[classes.cpu().numpy()]


# ------------------------------------------------------------------------------- loading

def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch_load_plain(path)  # a pickle carrying code or a damaged file: one whole line
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors; {WEIGHTS_HELP}")
    return dict(obj)


def _normalise_keys(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DataParallel's ``module.``; old BERT LayerNorm names gamma/beta -> weight/bias."""
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("module.")
        k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", k)
        k = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)
        out[k] = v
    return out


def infer_bert_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Read the BERT geometry off a CheXbert state dict (heads assumed 64 wide, as in BERT)."""
    try:
        vocab, hidden = sd["bert.embeddings.word_embeddings.weight"].shape
        max_pos = sd["bert.embeddings.position_embeddings.weight"].shape[0]
        types = sd["bert.embeddings.token_type_embeddings.weight"].shape[0]
        inter = sd["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as e:
        raise WeightsError(f"state dict has no {e.args[0]}; not a CheXbert checkpoint") from None
    layer = re.compile(r"bert\.encoder\.layer\.(\d+)\.")
    layer_ids = [int(m.group(1)) for k in sd if (m := layer.match(k))]
    layers = 1 + max(layer_ids)
    if hidden % 64:
        raise WeightsError(f"hidden size {hidden} is not a multiple of 64; put the BERT "
                           "config.json (with num_attention_heads) beside the weights")
    return {"vocab_size": int(vocab), "hidden_size": int(hidden), "num_hidden_layers": layers,
            "num_attention_heads": int(hidden) // 64, "intermediate_size": int(inter),
            "max_position_embeddings": int(max_pos), "type_vocab_size": int(types)}


_BERT_KEYS = set(BERT_BASE_UNCASED)


def _bert_config_file(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: not a readable config.json ({e})") from None


def _bert_config_from(obj: str | Path | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        obj = _bert_config_file(Path(obj))
    if "args" in obj and "bert_config" in obj.get("args", {}):  # a cxraug component config
        obj = obj["args"]["bert_config"] or {}
    return {k: v for k, v in obj.items() if k in _BERT_KEYS}


def load_chexbert(weights: str | Path | None,
                  config: str | Path | Mapping[str, Any] | None = None) -> CheXbertModel:
    """Build :class:`CheXbertModel` from local weights (see module docstring); eval mode, CPU.

    ``config``: BERT geometry (dict or config.json path) for a bare state-dict file; default: a
    ``config.json`` beside the file, else read off the tensor shapes (bert-base for chexbert.pth).
    Raises :class:`~cxraug.core.errors.WeightsError` (one line) for missing or mismatching weights.
    """
    if weights is None or str(weights).strip() == "":
        raise WeightsError(f"CheXbert needs weights: {WEIGHTS_HELP}")
    path = Path(weights)
    if not path.exists():
        raise WeightsError(f"{path}: CheXbert weights not found; {WEIGHTS_HELP}")
    if path.is_dir():
        cfg_file = path / CONFIG_NAME
        if cfg_file.is_file() and "class" in _bert_config_file(cfg_file):
            model = load_component(path)
            if not isinstance(model, CheXbertModel):
                raise WeightsError(f"{path}: holds a {type(model).__name__}, not a CheXbertModel")
            return model.eval()
        files = [path / n for n in (WEIGHTS_NAME, "pytorch_model.bin", "chexbert.pth")]
        found = next((f for f in files if f.is_file()), None)
        if found is None:
            raise WeightsError(f"{path}: no {WEIGHTS_NAME}, pytorch_model.bin or chexbert.pth "
                               f"here; {WEIGHTS_HELP}")
        config = config if config is not None else (cfg_file if cfg_file.is_file() else None)
        path = found
    elif config is None and (path.parent / CONFIG_NAME).is_file():
        config = path.parent / CONFIG_NAME
    sd = _normalise_keys(_read_state_dict(path))
    bert_config = _bert_config_from(config) or infer_bert_config(sd)
    model = CheXbertModel(bert_config=bert_config)
    expected = model.state_dict()
    sd = {k: v for k, v in sd.items() if k in expected or not k.endswith("position_ids")}
    missing = [k for k in expected if k not in sd and not k.endswith("position_ids")]
    unexpected = [k for k in sd if k not in expected]
    wrong = [k for k in sd if k in expected and sd[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise WeightsError(f"{path}: weights do not fit CheXbert (missing {missing[:2]}, "
                           f"unexpected {unexpected[:2]}, wrong shape {wrong[:2]}); {WEIGHTS_HELP}")
    model.load_state_dict(sd, strict=False)
    return model.eval()


def load_tokenizer(path: str | Path | None):
    """A BERT WordPiece tokenizer from a local folder (or a ``vocab.txt`` path); never downloads."""
    if path is None or str(path).strip() == "":
        raise WeightsError(f"CheXbert needs a tokenizer: {TOKENIZER_HELP}")
    path = Path(path)
    from transformers import BertTokenizer

    if path.is_file() and path.name.endswith(".txt"):
        return BertTokenizer(vocab=str(path), do_lower_case=True)
    if not (path / "vocab.txt").is_file():
        raise WeightsError(f"{path}: no vocab.txt here; {TOKENIZER_HELP}")
    return BertTokenizer.from_pretrained(str(path), local_files_only=True)


# ------------------------------------------------------------------------------- labeler

class CheXbert:
    """Report labeler with :class:`cxraug.data.labeler.RuleLabeler`'s interface.

    ``label(texts)`` -> ``float32 [N, 14]`` raw labels. Reads the same text as the rule labeler
    (cleaned findings + impression); reports are cut to the model's 512 tokens, as in CheXbert.
    """

    name = "chexbert"

    def __init__(self, weights: str | Path | None, tokenizer: str | Path | None,
                 config: str | Path | Mapping[str, Any] | None = None, batch_size: int = 16,
                 device: str | torch.device = "cpu") -> None:
        self.model = load_chexbert(weights, config).to(device)
        self.tokenizer = load_tokenizer(tokenizer)
        vocab = len(self.tokenizer)
        if vocab > self.model.bert.config.vocab_size:
            raise WeightsError(f"{tokenizer}: vocabulary has {vocab} tokens but the model only "
                               f"{self.model.bert.config.vocab_size}; use the model's vocab.txt")
        self.batch_size = batch_size
        self.device = torch.device(device)

    def label_text(self, text: str | None) -> np.ndarray:
        return self.label([text])[0]

    def label(self, texts: Iterable[str | None]) -> np.ndarray:
        """Raw ``float32 [N, 14]``; empty reports and text that is not a report are left
        unlabelled (all blank), as by the rule labeler (:func:`cxraug.data.labeler_vocab.text_problem`)."""

        raw = list(texts)
        texts = [labeling_text(t or "") for t in raw]
        out = np.full((len(texts), L.N_OBS), np.nan, dtype=np.float32)
        # batch reports of similar length together: less padding, same results
        order = sorted((i for i in range(len(texts)) if text_problem(raw[i]) is None),
                       key=lambda i: len(texts[i]))
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.model.max_length, return_tensors="pt")
            out[idx] = self.model.predict(enc["input_ids"].to(self.device),
                                          enc["attention_mask"].to(self.device))
        return out


def raw_from_classes(classes: np.ndarray) -> np.ndarray:
    """Map CheXbert class indices ``[..., 14]`` (0 blank, 1 pos, 2 neg, 3 unc) to raw labels."""
    return _CLASS_TO_RAW[np.asarray(classes, dtype=np.int64)]


__all__ = ["BERT_BASE_UNCASED", "HEAD_CLASSES", "CheXbert", "CheXbertModel", "infer_bert_config",
           "load_chexbert", "load_tokenizer", "raw_from_classes"]
