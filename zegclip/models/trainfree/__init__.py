"""Training-free frozen CLIP (MaskCLIP, SCLIP, ClearCLIP, NACLIP) with PAMR refinement."""
