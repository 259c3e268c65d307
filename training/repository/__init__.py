"""The feature repository (memory-mapped store), the ResVAE that compresses it, and stage ``resvae``."""
