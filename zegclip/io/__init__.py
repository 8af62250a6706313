"""Weights and checkpoints: our safetensors format, the official converter, loading by
family, and the vocabulary-embedding cache."""
