"""Data sources: folders and Parquet, label mapping, bad pairs skipped and counted."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from zegclip.train.augment import AugmentConfig
from zegclip.train.data import PairSource, encode_png, folder_pairs, map_labels, parquet_pairs
from zegclip.train.loop import SampleStream, next_batch


def _write_folder(root, sizes):
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i, (img_hw, mask_hw) in enumerate(sizes):
        image = np.full((*img_hw, 3), 40 * i, dtype=np.uint8)
        (root / "images" / f"p{i}.png").write_bytes(encode_png(image))
        (root / "masks" / f"p{i}.png").write_bytes(encode_png(np.full(mask_hw, i, np.uint8)))
    return folder_pairs(str(root / "images"), str(root / "masks"))


def test_map_labels_reduce_zero_and_out_of_range():
    mask = np.array([[0, 1, 3, 11, 255]], dtype=np.uint8)
    assert map_labels(mask, 11).tolist() == [[0, 1, 3, 255, 255]]
    assert map_labels(mask, 11, reduce_zero_label=True).tolist() == [[255, 0, 2, 10, 255]]


def test_bad_pairs_are_skipped_and_counted(tmp_path):
    pairs = _write_folder(tmp_path, [((20, 20), (20, 20)), ((20, 20), (10, 20)), ((20, 20),) * 2])
    (tmp_path / "images" / "p2.png").write_bytes(b"not an image")
    source = PairSource(pairs, 11)
    assert source.load(0) is not None
    assert source.load(1) is None and source.load(2) is None
    assert source.bad == {1, 2}
    stream = SampleStream(len(source), seed=0)
    images, labels = next_batch(source, stream, AugmentConfig(crop_size=16, scale=(64, 16)), 3)
    assert images.shape == (3, 3, 16, 16) and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) <= {0, 255}  # only pair 0 (label 0) is usable


def test_parquet_pairs_binary_and_image_struct(tmp_path):
    img = encode_png(np.zeros((8, 8, 3), np.uint8))
    mask = encode_png(np.full((8, 8), 2, np.uint8))
    table = pa.table({"image": [{"bytes": img, "path": "a.png"}], "mask": pa.array([mask])})
    pq.write_table(table, tmp_path / "part-0.parquet")
    pairs = parquet_pairs(str(tmp_path))
    image, labels = PairSource(pairs, 3).load(0)
    assert image.shape == (8, 8, 3) and labels.max() == 2
