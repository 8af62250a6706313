"""Ray Data labelling pipeline: shards in, per-shard Parquet label files out.

Never imports torch or ``zegclip``; the model arrives as callables (see ``pipeline.predictor``).
"""

from __future__ import annotations
