"""Model code: SigLIP-style ViT, Gemma-style mixture-of-transformers decoder, the VLA policy."""
