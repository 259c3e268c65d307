"""Torch autograd ops over the kernels: exact backward, against the pure-torch reference."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from diffdefect_edge import kernels  # noqa: E402
from training.teacher.ops import cross_attention, cross_attention_reference, fft_filter, fft_filter_reference  # noqa: E402

# the float32 ops run the compiled kernels: on CPU tensors, and on CUDA tensors where a GPU and the CUDA build are
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not (torch.cuda.is_available() and kernels.cuda_available()), reason="no usable CUDA device")])]


@pytest.mark.parametrize("h, w", [(7, 6), (5, 5), (1, 4), (6, 1)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fft_filter_gradcheck_float64(h, w, per_channel):
    x = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
    mshape = (3, h, w // 2 + 1) if per_channel else (h, w // 2 + 1)
    mask = torch.rand(mshape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fft_filter, (x, mask))


@pytest.mark.parametrize("w", [8, 9])
def test_fft_filter_is_self_adjoint_including_dc_and_nyquist(w):
    """<T x, y> == <x, T y> for a real mask with arbitrary values on the DC and Nyquist columns."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 1, 6, w, generator=g, dtype=torch.float64), torch.randn(1, 1, 6, w, generator=g,
                                                                                   dtype=torch.float64)
    mask = torch.rand(6, w // 2 + 1, generator=g, dtype=torch.float64)
    lhs = (fft_filter_reference(x, mask) * y).sum()
    rhs = (x * fft_filter_reference(y, mask)).sum()
    assert torch.allclose(lhs, rhs, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_fft_filter_kernel_float32_forward_and_grads_match_reference(device):
    x = torch.randn(2, 4, 20, 25, device=device, requires_grad=True)
    mask = torch.rand(4, 20, 13, device=device, requires_grad=True)
    y = fft_filter(x, mask)
    assert y.device == x.device
    y_ref = fft_filter_reference(x, mask)
    assert torch.allclose(y, y_ref, atol=1e-5)
    g = torch.randn_like(y)
    gx, gm = torch.autograd.grad(y, (x, mask), g)
    gx_ref, gm_ref = torch.autograd.grad(y_ref, (x, mask), g)
    assert torch.allclose(gx, gx_ref, atol=1e-5)
    assert torch.allclose(gm, gm_ref, atol=1e-4)


def test_cross_attention_gradcheck_float64():
    q = torch.randn(1, 2, 5, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, 7, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 7, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: cross_attention(a, b, c, scale=0.7), (q, k, v))


@pytest.mark.parametrize("device", DEVICES)
def test_cross_attention_kernel_float32_matches_reference_with_grads(device):
    q = torch.randn(2, 4, 50, 32, device=device, requires_grad=True)
    k = torch.randn(2, 4, 30, 32, device=device, requires_grad=True)
    v = torch.randn(2, 4, 30, 32, device=device, requires_grad=True)
    out, ref = cross_attention(q, k, v), cross_attention_reference(q, k, v)
    assert out.device == q.device
    assert torch.allclose(out, ref, atol=1e-5)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        assert torch.allclose(a, b, atol=1e-4)


def test_impl_argument_is_checked():
    with pytest.raises(ValueError, match="impl"):
        fft_filter(torch.zeros(1, 1, 4, 4), torch.zeros(4, 3), impl="fast")
