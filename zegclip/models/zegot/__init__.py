"""ZegOT: learned prompt sets matched to frozen CLIP features by optimal transport."""
