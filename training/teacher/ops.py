"""Autograd functions whose forward calls ``diffdefect_edge.kernels`` (CPU and CUDA float32 tensors).

FFT filter backward (exact): ``y = irfft2(M * rfft2(x))`` is self-adjoint for a real half-spectrum mask M,
so ``dL/dx = fft_filter(dL/dy, M)`` (the same kernel). For the mask,
``dL/dM[k] = c_k / (H W) * Re(X[k] * conj(G[k]))`` with ``X = rfft2(x)``, ``G = rfft2(dL/dy)`` and
``c_k = 1`` on the DC and Nyquist columns (which irfft counts once), 2 elsewhere; this one is computed with
torch.fft, summed over the planes that share the mask.

Cross-attention backward is left in torch: it recomputes the probabilities from the saved q, k, v in query
chunks (flash-style recomputation, memory O(chunk * Lk)), rather than a C++/CUDA backward kernel.

Tensors other than float32 (e.g. float64 for gradcheck) run the pure-torch forward with the same
hand-written backward, so gradcheck in float64 checks these backward formulas.
"""

from __future__ import annotations

import math

import torch

from diffdefect_edge import kernels

ATTENTION_BACKWARD_CHUNK = 1024


def fft_filter_reference(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pure torch: ``irfft2(rfft2(x) * mask, s=(H, W))``."""
    return torch.fft.irfft2(torch.fft.rfft2(x) * mask, s=x.shape[-2:])


def cross_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              scale: float | None = None) -> torch.Tensor:
    """Pure torch: ``softmax(q k^T * scale) v``."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v


def _kernel_fft_filter(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32:
        return fft_filter_reference(x, mask)
    x, mask = x.contiguous(), mask.contiguous()
    if x.is_cuda:
        return kernels.fft_filter(x, mask)
    return torch.from_numpy(kernels.fft_filter(x.numpy(), mask.numpy()))


def _kernel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    if q.dtype != torch.float32:
        return cross_attention_reference(q, k, v, scale)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if q.is_cuda:
        return kernels.cross_attention(q, k, v, scale)
    return torch.from_numpy(kernels.cross_attention(q.numpy(), k.numpy(), v.numpy(), scale))


class _FFTFilter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, mask)
        return _kernel_fft_filter(x.detach(), mask.detach())

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, mask = ctx.saved_tensors
        grad_x = grad_mask = None
        if ctx.needs_input_grad[0]:
            grad_x = _kernel_fft_filter(grad_out, mask)
        if ctx.needs_input_grad[1]:
            h, w = x.shape[-2:]
            weight = torch.full((w // 2 + 1,), 2.0, dtype=x.dtype, device=x.device)
            weight[0] = 1.0
            if w % 2 == 0:
                weight[-1] = 1.0
            prod = (torch.fft.rfft2(x) * torch.fft.rfft2(grad_out).conj()).real * (weight / (h * w))
            grad_mask = prod.sum(dim=(0, 1)) if mask.dim() == 2 else prod.sum(dim=0)
        return grad_x, grad_mask


class _CrossAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        out = _kernel_attention(q.detach(), k.detach(), v.detach(), scale)
        ctx.save_for_backward(q, k, v, out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, out = ctx.saved_tensors
        scale = ctx.scale
        grad_q = torch.empty_like(q)
        grad_k = torch.zeros_like(k)
        grad_v = torch.zeros_like(v)
        for i in range(0, q.shape[2], ATTENTION_BACKWARD_CHUNK):
            sl = slice(i, i + ATTENTION_BACKWARD_CHUNK)
            qc, do, oc = q[:, :, sl], grad_out[:, :, sl], out[:, :, sl]
            p = torch.softmax(qc @ k.transpose(-1, -2) * scale, dim=-1)  # recomputed, one chunk at a time
            grad_v += p.transpose(-1, -2) @ do
            dp = do @ v.transpose(-1, -2)
            ds = p * (dp - (do * oc).sum(dim=-1, keepdim=True))
            grad_q[:, :, sl] = ds @ k * scale
            grad_k += ds.transpose(-1, -2) @ qc * scale
        return grad_q, grad_k, grad_v, None


def fft_filter(x: torch.Tensor, mask: torch.Tensor, impl: str = "kernel") -> torch.Tensor:
    """Differentiable FFT filter; ``impl="reference"`` runs pure torch (for checking)."""
    if impl == "reference":
        return fft_filter_reference(x, mask)
    if impl != "kernel":
        raise ValueError(f"impl must be 'kernel' or 'reference', got {impl!r}")
    return _FFTFilter.apply(x, mask)


def cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
                    impl: str = "kernel") -> torch.Tensor:
    """Differentiable cross-attention; ``impl="reference"`` runs pure torch (for checking)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if impl == "reference":
        return cross_attention_reference(q, k, v, scale)
    if impl != "kernel":
        raise ValueError(f"impl must be 'kernel' or 'reference', got {impl!r}")
    return _CrossAttention.apply(q, k, v, scale)
