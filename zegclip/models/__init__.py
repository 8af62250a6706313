"""The model families behind one interface (:class:`zegclip.models.scorer.DenseScorer`).

``zegclip/`` ZegCLIP (prompted ViT, relationship descriptor, decoder), ``zegot/`` ZegOT (learned
prompt sets matched by optimal transport), ``trainfree/`` frozen CLIP (MaskCLIP, SCLIP, ClearCLIP,
NACLIP); ``vit`` holds what they share of the open_clip ViT.
"""
