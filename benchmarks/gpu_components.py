"""The frozen components of the GPU benchmark, built in its work folder with random weights: an
autoencoder shaped like Stable Diffusion's KL-f8 (``stabilityai/sd-vae-ft-mse``) and a report
encoder shaped like BiomedCLIP (PubMedBERT text tower + ViT-B/16), so sampling and the CLI run cost
what the paper recipe's real components cost, without downloading them."""

from __future__ import annotations

import json
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

import torch
from gpu_common import REPORTS, Sizes, first_line

PUBMEDBERT_HUB = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
BERT = {"paper": {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
                  "num_attention_heads": 12, "intermediate_size": 3072,
                  "max_position_embeddings": 512, "type_vocab_size": 2},
        "tiny": {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
                 "num_attention_heads": 1, "intermediate_size": 64,
                 "max_position_embeddings": 64, "type_vocab_size": 2}}


def make_sd_vae_folder(folder: Path, sizes: Sizes) -> str:
    """A diffusers AutoencoderKL with stabilityai/sd-vae-ft-mse's config (tiny: same layout,
    narrow), random weights, ``save_pretrained``: what ``load_pretrained_vae`` reads."""
    from diffusers import AutoencoderKL

    chans, layers, groups = ((8, 16, 16, 16), 1, 8) if sizes.tiny else ((128, 256, 512, 512), 2, 32)
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=chans,
                        layers_per_block=layers, act_fn="silu", latent_channels=4,
                        norm_num_groups=groups, sample_size=sizes.image_size,
                        scaling_factor=0.18215)
    vae.save_pretrained(str(folder), safe_serialization=True)
    n = sum(p.numel() for p in vae.parameters())
    return f"sd-vae-ft-mse-shaped AutoencoderKL, random weights, {n / 1e6:.1f}M parameters"


def write_bert_tokenizer(folder: Path, vocab_size: int) -> None:
    """An uncased WordPiece vocabulary of BERT's size (special tokens, characters, a few report
    words, padding entries): the token count per report is what costs, not the word pieces."""
    words = sorted({w.strip(string.punctuation).lower() for r in REPORTS for w in r.split()} - {""})
    special = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = special + chars + ["##" + c for c in chars] + words
    vocab += [f"[unused{i}]" for i in range(99, 99 + vocab_size - len(vocab))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}))


def make_biomedclip_folder(folder: Path, sizes: Sizes) -> str:
    """An open_clip folder shaped like BiomedCLIP's hub repo, random weights: PubMedBERT-base text
    tower (BERT 12 x 768, 512 positions) + timm ViT-B/16 image tower at 224 px, embed 512; its
    open_clip_config.json names the real PubMedBERT hub id, as the download does, so the loader
    rebuilds the BERT config from the checkpoint offline. Tiny: the same layout, narrow."""
    from open_clip.model import CustomTextCLIP
    from safetensors.torch import save_file
    from transformers import BertConfig

    folder.mkdir(parents=True, exist_ok=True)
    bert_cfg = BERT["tiny" if sizes.tiny else "paper"]
    write_bert_tokenizer(folder, bert_cfg["vocab_size"])
    bert_dir = folder.parent / f".{folder.name}-bert-config"
    BertConfig(**bert_cfg).save_pretrained(str(bert_dir))
    text_cfg = {"hf_model_name": str(bert_dir), "hf_tokenizer_name": str(bert_dir),
                "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                "context_length": 256}
    if sizes.tiny:
        embed, vision_cfg = 16, {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                                 "head_width": 16}
    else:
        embed, vision_cfg = 512, {"timm_model_name": "vit_base_patch16_224",
                                  "timm_model_pretrained": False, "timm_pool": "",
                                  "timm_proj": "linear", "image_size": 224}
    torch.manual_seed(0)
    clip = CustomTextCLIP(embed, vision_cfg, dict(text_cfg, hf_model_pretrained=False))
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    n = sum(p.numel() for p in clip.parameters())
    del clip
    shutil.rmtree(bert_dir, ignore_errors=True)
    text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = PUBMEDBERT_HUB
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": {"embed_dim": embed, "vision_cfg": vision_cfg, "text_cfg": text_cfg},
         "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                            "std": [0.26862954, 0.26130258, 0.27577711]}}))
    return (f"BiomedCLIP-shaped open_clip folder, random weights, {n / 1e6:.1f}M parameters "
            f"(BERT {bert_cfg['num_hidden_layers']} x {bert_cfg['hidden_size']}); synthetic "
            f"uncased WordPiece vocabulary of {bert_cfg['vocab_size']}")


@dataclass
class Components:
    """The frozen parts, built once in the work folder, shared by sampling and the CLI run."""

    vae: str                 # folder name inside the work folder
    vae_desc: str
    text_encoder: str        # biomedclip, or minilm when the BiomedCLIP-shaped folder fails
    text_path: str | None    # folder name inside the work folder
    text_desc: str


def build_components(work: Path, sizes: Sizes) -> Components:
    vae_desc = make_sd_vae_folder(work / "sd-vae", sizes)
    try:
        from cxraug.text.encoders import build_text_encoder

        text_desc = make_biomedclip_folder(work / "biomedclip", sizes)
        build_text_encoder("biomedclip", str(work / "biomedclip"), sizes.max_tokens)  # loads?
        return Components("sd-vae", vae_desc, "biomedclip", "biomedclip", text_desc)
    except Exception as e:  # noqa: BLE001 - any failure means: fall back, and say why
        return Components("sd-vae", vae_desc, "minilm", None,
                          f"offline MiniLM-L6 (the BiomedCLIP-shaped folder failed: {first_line(e)})")
