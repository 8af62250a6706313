"""jobs/evaluate.py on a labelling run's Parquet output (pipeline schema) against GT masks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.evaluate import evaluate_predictions
from pipeline import schema
from zegclip.train.data import encode_png, folder_pairs
from zegclip.train.metrics import compute_metrics


def test_rows_match_gt_by_stem_and_ids_map_by_name(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    gt = {"p0": np.array([[0, 0], [1, 255]], np.uint8), "p1": np.array([[1, 1], [1, 1]], np.uint8)}
    for stem, mask in gt.items():
        (tmp_path / "images" / f"{stem}.png").write_bytes(encode_png(np.zeros((2, 2, 3), np.uint8)))
        (tmp_path / "masks" / f"{stem}.png").write_bytes(encode_png(mask))
    pairs = folder_pairs(str(tmp_path / "images"), str(tmp_path / "masks"))
    # The labelling run's vocabulary is ["road", "sky"]: its id 0 is our class 1 and vice versa.
    pred0 = np.array([[1, 0], [0, 0]], np.uint8)  # -> ours [[0, 1], [1, 1]]
    rows = {
        schema.SOURCE_URI: ["s3://bucket/in/p0.jpg", "s3://bucket/in/zz.jpg", "x/p1.jpg#row=3"],
        schema.MASK: [
            {"bytes": encode_png(pred0), "path": None},
            {"bytes": encode_png(pred0), "path": None},
            None,
        ],
        schema.STATUS: [schema.STATUS_OK, schema.STATUS_OK, schema.STATUS_ERROR],
    }
    meta = {b"labeler": json.dumps({"vocabulary": ["road", "sky"]})}
    out = tmp_path / "run" / "labels"
    out.mkdir(parents=True)
    table = pa.table(rows).replace_schema_metadata(meta)
    pq.write_table(table, out / "shard-0.parquet")

    conf, counts = evaluate_predictions(str(tmp_path / "run"), pairs, ["sky", "road"])
    assert counts == {"matched": 1, "unmatched": 1, "errors": 1, "missing": 1}
    m = compute_metrics(conf)
    # GT p0 (ignore excluded): sky, sky, road; predicted sky, road, road.
    np.testing.assert_allclose(m.iou, [1 / 2, 1 / 2])
    assert np.isclose(m.pixel_acc, 2 / 3)
