"""Stage ``teacher``: the detector fused with DDPM features (FFT filter + dynamic cross-attention)."""
