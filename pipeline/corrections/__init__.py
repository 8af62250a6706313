"""People's corrections coming back from annotation tools, as training/evaluation pairs.

``read.read_corrections`` reads a Label Studio JSON export, a CVAT "Segmentation mask 1.1"
export (zip or folder), COCO JSON (RLE or polygons) or an mmseg-style folder; ``pairs`` matches
them to images through the ids our exports recorded and mixes them with a run's pseudo-labels.
"""
