"""Torch ops over the compiled kernels, with exact backward passes, and their pure-torch references."""

from training.ops.fusion_ops import (
    cross_attention,
    cross_attention_reference,
    fft_filter,
    fft_filter_reference,
)

__all__ = ["cross_attention", "cross_attention_reference", "fft_filter", "fft_filter_reference"]
