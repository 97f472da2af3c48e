"""Embedding cache: hits return identical tensors, from memory and from disk."""

import torch

from cxraug.text.cache import EmbeddingCache
from cxraug.text.squeeze import ReportEncoder


def test_cache_hit_returns_identical_tensors(tmp_path):
    torch.manual_seed(0)
    enc = ReportEncoder("minilm", max_tokens=16, cond_tokens=4).freeze()
    cache = EmbeddingCache.for_encoder(tmp_path, enc)
    texts = ["There is atelectasis.", "There is no finding.", "There is atelectasis."]
    g1, c1 = cache.encode(enc, texts)
    assert c1.shape == (3, 4, 384) and cache.misses == 2
    with torch.no_grad():
        g_direct, c_direct = enc.encode(texts)
    assert torch.equal(c1, c_direct) and torch.equal(g1, g_direct)

    g2, c2 = cache.encode(enc, texts)
    assert cache.misses == 2 and cache.hits == 2
    assert torch.equal(g1, g2) and torch.equal(c1, c2)

    # a new process (new cache object) reads the same tensors from disk
    disk = EmbeddingCache.for_encoder(tmp_path, enc, memory_items=1)
    g3, c3 = disk.encode(enc, texts)
    assert disk.misses == 0 and torch.equal(c1, c3) and torch.equal(g1, g3)

    # another encoder (different squeeze weights) gets its own entries
    torch.manual_seed(1)
    other = ReportEncoder("minilm", max_tokens=16, cond_tokens=4).freeze()
    assert other.encoder_id != enc.encoder_id
    assert EmbeddingCache.for_encoder(tmp_path, other).get(texts[0]) is None
