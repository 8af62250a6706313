"""Training: image/mask pair sources, augmentation, losses, the loop and its state, metrics."""
