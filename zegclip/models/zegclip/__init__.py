"""ZegCLIP (Zhou et al., CVPR 2023): config, prompted ViT backbone, decoder, model, builder."""
