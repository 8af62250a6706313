"""Load a ``fiftyone`` export with FiftyOne's ``ImageSegmentationDirectory`` importer; print what
it read as JSON.

Runs in its own environment (``tests/reader_envs.py``), with FiftyOne's bundled MongoDB
(``mongod`` listens on 127.0.0.1 only, its data in ``$FIFTYONE_DATABASE_DIR``).

Usage: python fiftyone_reader.py DIR
Prints: {"version", "mask_targets", "items": [{"image": path relative to DIR, "image_shape",
"mask_shape", "mask_sha1", "mask_values"}]}; the sha1 is of the C-contiguous uint8 mask.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def main(root: str) -> None:
    import fiftyone as fo

    dataset = fo.Dataset.from_dir(
        dataset_dir=root,
        dataset_type=fo.types.ImageSegmentationDirectory,
        label_field="ground_truth",
    )
    targets = json.loads((Path(root) / "mask_targets.json").read_text())
    dataset.default_mask_targets = {int(k): v for k, v in targets.items()}
    dataset.compute_metadata()
    items = []
    for sample in dataset:
        mask = sample.ground_truth.get_mask()
        items.append(
            {
                "image": str(Path(sample.filepath).relative_to(Path(root).resolve())),
                "image_shape": [sample.metadata.height, sample.metadata.width],
                "mask_shape": list(mask.shape),
                "mask_sha1": hashlib.sha1(mask.astype("uint8").tobytes()).hexdigest(),
                "mask_values": sorted(set(mask.ravel().tolist())),
            }
        )
    print(
        json.dumps(
            {
                "version": fo.__version__,
                "mask_targets": {str(k): v for k, v in dataset.default_mask_targets.items()},
                "items": sorted(items, key=lambda x: x["image"]),
            }
        )
    )
    dataset.delete()


if __name__ == "__main__":
    main(sys.argv[1])
