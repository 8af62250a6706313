"""Export a labelling run's pre-labels to training and annotation-tool formats.

Pure pyarrow / PIL / numpy (pycocotools for COCO); no torch. Entry point: ``jobs/export.py``.
"""
