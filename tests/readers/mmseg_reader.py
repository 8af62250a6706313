"""Load an ``mmseg`` export with mmsegmentation's own classes; print what they read as JSON.

Runs in its own environment (mmsegmentation 1.2.2, mmengine, mmcv-lite: see
``tests/reader_envs.py``). mmcv's compiled ops do not install here, and ``mmseg.datasets`` and
``mmseg.utils`` import them in their package ``__init__`` for models only; so those two packages
are entered without their ``__init__`` and the real modules used by a training config's data
pipeline are imported from them: ``BaseSegDataset`` (pairs img_dir and ann_dir files),
mmcv's ``LoadImageFromFile`` and mmseg's ``LoadAnnotations``.

Usage: python mmseg_reader.py EXPORT_DIR SPLIT
Prints: {"versions", "classes", "img_suffix", "items": [{"img", "seg", "image_shape",
"image_sha1", "seg_sha1", "seg_values"}]}, items sorted by image path; the sha1s are of the
C-contiguous uint8 arrays (image as BGR, as mmcv loads it).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import types
from pathlib import Path


def _bare_package(name: str) -> None:
    """Register package ``name`` without running its ``__init__`` (which imports mmcv.ops)."""
    parent_name, child = name.rsplit(".", 1)
    parent = importlib.import_module(parent_name)
    module = types.ModuleType(name)
    module.__path__ = [str(Path(parent.__path__[0]) / child)]
    sys.modules[name] = module


def main(root: str, split: str) -> None:
    import mmcv
    import mmengine
    import mmseg

    for name in ("mmseg.utils", "mmseg.datasets", "mmseg.datasets.transforms"):
        _bare_package(name)
    # the one name loading.py takes from mmseg.utils' __init__
    sys.modules["mmseg.utils"].datafrombytes = importlib.import_module(
        "mmseg.utils.io"
    ).datafrombytes
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets.basesegdataset import BaseSegDataset
    from mmseg.datasets.transforms.loading import LoadAnnotations

    info = json.loads((Path(root) / "dataset_info.json").read_text())
    classes = (Path(root) / "classes.txt").read_text().split("\n")
    suffix = info["img_suffix"]  # one suffix per export
    dataset = BaseSegDataset(
        data_root=root,
        data_prefix=dict(img_path=f"img_dir/{split}", seg_map_path=f"ann_dir/{split}"),
        img_suffix=suffix,
        seg_map_suffix=info["seg_map_suffix"],
        metainfo=dict(classes=classes),
        pipeline=[LoadImageFromFile(), LoadAnnotations()],
        serialize_data=False,
    )
    items = []
    for i in range(len(dataset)):
        out = dataset[i]
        image, seg = out["img"], out["gt_seg_map"]
        items.append(
            {
                "img": str(Path(out["img_path"]).relative_to(root)),
                "seg": str(Path(out["seg_map_path"]).relative_to(root)),
                "image_shape": list(image.shape),
                "image_sha1": hashlib.sha1(image.tobytes()).hexdigest(),
                "seg_sha1": hashlib.sha1(seg.astype("uint8").tobytes()).hexdigest(),
                "seg_values": sorted(int(v) for v in set(seg.ravel().tolist())),
            }
        )
    print(
        json.dumps(
            {
                "versions": {
                    "mmsegmentation": mmseg.__version__,
                    "mmengine": mmengine.__version__,
                    "mmcv": mmcv.__version__,
                },
                "classes": list(dataset.metainfo["classes"]),
                "img_suffix": suffix,
                "ignore_index": dataset.ignore_index,
                "reduce_zero_label": dataset.reduce_zero_label,
                "items": sorted(items, key=lambda x: x["img"]),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
