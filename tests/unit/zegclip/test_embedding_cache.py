"""Vocabulary embeddings are computed once per (weights, vocabulary, templates) and reused."""

from __future__ import annotations

import numpy as np

import zegclip
from zegclip.io.embedding_cache import cached_embeddings, embedding_key


def test_cache_computes_once_and_rewrites_corrupt_files(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(2, 3)

    key = embedding_key({"m": 1}, ["cat", "dog"], ["a {}"])
    first = cached_embeddings(key, compute, cache_dir=str(tmp_path))
    second = cached_embeddings(key, compute, cache_dir=str(tmp_path))
    assert len(calls) == 1 and np.array_equal(first, second)
    (tmp_path / "embeddings" / f"{key}.npy").write_bytes(b"garbage")
    third = cached_embeddings(key, compute, cache_dir=str(tmp_path))
    assert len(calls) == 2 and np.array_equal(first, third)


def test_key_changes_with_names_templates_and_model():
    base = embedding_key({"m": 1}, ["cat"], ["a {}"])
    assert base != embedding_key({"m": 2}, ["cat"], ["a {}"])
    assert base != embedding_key({"m": 1}, ["dog"], ["a {}"])
    assert base != embedding_key({"m": 1}, ["cat"], ["the {}"])


def test_labeler_reuses_cached_embeddings(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("ZEGCLIP_CACHE", str(tmp_path))
    spec = zegclip.LabelerSpec(checkpoint=str(tiny_checkpoint))
    vocab = zegclip.Vocabulary.from_names(["car", "sky"])
    emb = zegclip.encode_vocabulary_for(spec, vocab)
    files = list((tmp_path / "embeddings").glob("*.npy"))
    assert len(files) == 1
    np.save(files[0], np.full_like(emb, 7.0))  # prove the second call reads the cache
    assert (zegclip.encode_vocabulary_for(spec, vocab) == 7.0).all()
    fresh = zegclip.encode_vocabulary_for(spec, vocab, use_cache=False)
    assert np.allclose(fresh, emb)
    other = zegclip.encode_vocabulary_for(spec, zegclip.Vocabulary.from_names(["car", "road"]))
    assert not np.allclose(other, 7.0)
