"""diffdefect_edge.kernels against float64 numpy references, bad inputs, threads and ISA variants."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, gpu_emulation, needs_cuda, needs_cuda_build, needs_gpu_emulation
from hypothesis import given, settings
from hypothesis import strategies as st

from diffdefect_edge import _kernels, kernels

RNG = np.random.default_rng(1234)


def fft_reference(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask if mask.ndim == 2 else mask[None]
    return np.fft.irfft2(np.fft.rfft2(x.astype(np.float64)) * m.astype(np.float64), s=x.shape[-2:])


def attention_reference(q, k, v, scale):
    s = (q.astype(np.float64) @ np.swapaxes(k.astype(np.float64), -1, -2)) * scale
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    return (p / p.sum(axis=-1, keepdims=True)) @ v.astype(np.float64)


def rel_err(a, b) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def attention_err(out, q, k, v, scale) -> float:
    """Error of a float32 attention against float64, relative to the norm of sum_j p_ij |v_j|: each output row is
    a convex combination of value rows, whose rounding scales with those rows, not with the result (which can
    cancel to near 0: one query of head dim 1 gave 1.6e-5 relative to itself with a correct kernel)."""
    err = np.linalg.norm(out - attention_reference(q, k, v, scale))
    return float(err / max(np.linalg.norm(attention_reference(q, k, np.abs(v), scale)), 1e-30))


# float32 attention against float64 by attention_err: at most 2.1e-7 over 4,000 random (Lq, Lk, D) up to
# (100, 300, 128), 7.5e-7 with base-2 logits up to 120 (float32 rounds such logits by ~1e-5), so 2e-6 still
# catches a wrong weight on any key
ATTENTION_REL_TOL = 2e-6


def _fft_case(shape, per_channel):
    x = RNG.standard_normal(shape).astype(np.float32)
    b, c, h, w = shape
    mshape = (c, h, w // 2 + 1) if per_channel else (h, w // 2 + 1)
    return x, RNG.random(mshape).astype(np.float32)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 7, 5), (1, 2, 37, 41), (2, 2, 80, 80), (1, 3, 20, 25),
                                   (3, 5, 40, 50), (1, 1, 1, 9), (1, 1, 11, 1), (1, 17, 2, 2), (1, 1, 64, 48),
                                   (2, 3, 27, 24), (1, 2, 45, 33), (1, 1, 49, 35)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fft_filter_matches_float64_reference(shape, per_channel):
    x, mask = _fft_case(shape, per_channel)
    y = kernels.fft_filter(x, mask)
    assert y.shape == x.shape and y.dtype == np.float32
    assert rel_err(y, fft_reference(x, mask)) < 1e-5


def test_fft_filter_identity_and_lowpass_semantics():
    x = RNG.standard_normal((2, 3, 20, 25)).astype(np.float32)
    np.testing.assert_allclose(kernels.fft_filter(x, np.ones((20, 13), np.float32)), x, atol=1e-5)
    dc = np.zeros((20, 13), np.float32)
    dc[0, 0] = 1
    y = kernels.fft_filter(x, dc)  # keeps only the mean of each plane
    np.testing.assert_allclose(y, np.broadcast_to(x.mean(axis=(2, 3), keepdims=True), x.shape), atol=1e-5)


def test_fft_filter_per_channel_mask_uses_its_channel():
    x, mask = _fft_case((2, 3, 12, 10), per_channel=True)
    y = kernels.fft_filter(x, mask)
    for c in range(3):
        np.testing.assert_allclose(y[:, c:c + 1], kernels.fft_filter(np.ascontiguousarray(x[:, c:c + 1]), mask[c]),
                                   atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), c=st.integers(1, 9), h=st.integers(1, 45), w=st.integers(1, 45),
       per_channel=st.booleans())
def test_fft_filter_hypothesis_shapes(b, c, h, w, per_channel):
    x, mask = _fft_case((b, c, h, w), per_channel)
    assert rel_err(kernels.fft_filter(x, mask), fft_reference(x, mask)) < 1e-5


def test_fft_filter_accepts_non_contiguous_by_copying():
    base, mask = _fft_case((2, 6, 16, 16), False)
    x = base[:, ::2]  # a strided view
    assert not x.flags.c_contiguous
    assert rel_err(kernels.fft_filter(x, mask), fft_reference(np.ascontiguousarray(x), mask)) < 1e-5


def test_threads_do_not_change_results():
    x, mask = _fft_case((4, 8, 24, 24), True)
    one, many = kernels.fft_filter(x, mask, threads=1), kernels.fft_filter(x, mask, threads=2)
    np.testing.assert_array_equal(one, many)
    q, k, v = (RNG.standard_normal(s).astype(np.float32) for s in ((2, 2, 50, 32), (2, 2, 70, 32), (2, 2, 70, 32)))
    np.testing.assert_array_equal(kernels.cross_attention(q, k, v, threads=1), kernels.cross_attention(q, k, v, threads=2))
    with pytest.raises(ValueError, match="threads"):
        kernels.fft_filter(x, mask, threads=-1)


@pytest.mark.parametrize("d", [16, 32, 64, 128])
@pytest.mark.parametrize("lq, lk", [(1, 1), (33, 70), (64, 64), (100, 7), (5, 300)])
def test_cross_attention_matches_reference(d, lq, lk):
    q = RNG.standard_normal((2, 3, lq, d)).astype(np.float32)
    k = RNG.standard_normal((2, 3, lk, d)).astype(np.float32)
    v = RNG.standard_normal((2, 3, lk, d)).astype(np.float32)
    out = kernels.cross_attention(q, k, v)
    assert out.shape == q.shape
    assert attention_err(out, q, k, v, 1 / np.sqrt(d)) < ATTENTION_REL_TOL


def test_cross_attention_explicit_scale_and_odd_head_dim():
    q, k, v = (RNG.standard_normal(s).astype(np.float32) for s in ((1, 2, 9, 20), (1, 2, 13, 20), (1, 2, 13, 20)))
    assert attention_err(kernels.cross_attention(q, k, v, scale=0.3), q, k, v, 0.3) < ATTENTION_REL_TOL


def test_cross_attention_is_stable_for_huge_logits():
    """Logits of magnitude ~1e4 (exp would overflow without the running max), exactly representable in
    float32: small integer q and k, so the only error left is the softmax's own."""
    rng = np.random.default_rng(7)
    q = rng.integers(-3, 4, (1, 2, 40, 32)).astype(np.float32)
    k = rng.integers(-3, 4, (1, 2, 150, 32)).astype(np.float32)
    v = rng.standard_normal((1, 2, 150, 32)).astype(np.float32)
    out = kernels.cross_attention(q, k, v, scale=100.0)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, attention_reference(q, k, v, 100.0), atol=1e-5)


def test_cross_attention_exact_at_half_integer_base2_logits():
    """Logits whose base-2 distance to the row max is exactly k + 1/2, where round-to-nearest has a tie: the
    kernel's exp2 must split x = n + r with one and the same n (a split rounded two ways gave 2^(x +/- 1),
    a factor of 2 on such a key's weight). scale = float32(ln 2) makes the kernel's base-2 factor exactly 1,
    so with q = e_0 the logits are the keys' first coordinates, exactly."""
    offsets = np.array([0.0, -0.5, -1.5, -2.5, -3.5, -4.5, -5.5, -6.5, -9.5, -20.5], np.float32)
    lk, d = len(offsets), 32
    q = np.zeros((1, 1, 3, d), np.float32)
    q[..., 0] = 1.0
    k = np.zeros((1, 1, lk, d), np.float32)
    k[0, 0, :, 0] = offsets + 3.0  # the row max is 3: the kernel subtracts it, leaving the half-integers
    v = np.zeros((1, 1, lk, d), np.float32)
    v[0, 0, np.arange(lk), np.arange(lk)] = 1.0  # out[i, j] = weight of key j
    out = kernels.cross_attention(q, k, v, scale=float(np.float32(np.log(2))))
    weights = 2.0 ** offsets.astype(np.float64)
    np.testing.assert_allclose(out[0, 0, :, :lk], np.broadcast_to(weights / weights.sum(), (3, lk)), rtol=1e-6,
                               atol=1e-12)


@pytest.mark.parametrize("slope", [0.2, 0.1, 0.02, -0.2])
def test_cross_attention_when_the_max_rises_across_key_tiles(slope):
    """The kernel exponentiates against a reference max that only moves once a query's running max exceeds it by
    more than 8 (base 2): logits that rise along the keys (by 14.4, 7.2 or 1.4 per 72-key AVX2 tile) make it move
    at every tile, every other tile or never after the first; falling logits never. All must give the softmax."""
    lk, d = 240, 32
    q = np.zeros((1, 1, 5, d), np.float32)
    q[..., 0] = 1.0
    q[0, 0, :, 1] = np.linspace(-1, 1, 5)  # queries differ a little
    k = np.zeros((1, 1, lk, d), np.float32)
    k[0, 0, :, 0] = slope * np.arange(lk)
    k[0, 0, :, 1] = RNG.standard_normal(lk)
    v = RNG.standard_normal((1, 1, lk, d)).astype(np.float32)
    scale = float(np.float32(np.log(2)))  # base-2 logits = q . k
    out = kernels.cross_attention(q, k, v, scale=scale)
    assert attention_err(out, q, k, v, scale) < ATTENTION_REL_TOL


def test_cross_attention_large_random_logits_within_float32_precision():
    rng = np.random.default_rng(8)
    q = (rng.standard_normal((1, 2, 40, 32)) * 50).astype(np.float32)
    k = rng.standard_normal((1, 2, 150, 32)).astype(np.float32)
    v = rng.standard_normal((1, 2, 150, 32)).astype(np.float32)
    out = kernels.cross_attention(q, k, v, scale=1.0)  # |logits| up to ~1e3: float32 rounds them by ~1e-4
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, attention_reference(q, k, v, 1.0), atol=2e-3)


@settings(max_examples=30, deadline=None)
@given(lq=st.integers(1, 90), lk=st.integers(1, 150), d=st.integers(1, 128), heads=st.integers(1, 3))
def test_cross_attention_hypothesis_shapes(lq, lk, d, heads):
    q = RNG.standard_normal((1, heads, lq, d)).astype(np.float32)
    k = RNG.standard_normal((1, heads, lk, d)).astype(np.float32)
    v = RNG.standard_normal((1, heads, lk, d)).astype(np.float32)
    assert attention_err(kernels.cross_attention(q, k, v), q, k, v, 1 / np.sqrt(d)) < ATTENTION_REL_TOL


X4 = np.zeros((1, 2, 8, 8), np.float32)
M2 = np.zeros((8, 5), np.float32)


@pytest.mark.parametrize(
    "x, mask, exc, match",
    [
        (np.zeros((2, 8, 8), np.float32), M2, ValueError, r"x must have shape \(B, C, H, W\)"),
        (X4.astype(np.float64), M2, TypeError, "x must be float32"),
        (X4, M2.astype(np.float16), TypeError, "mask must be float32"),
        (X4, np.zeros((8, 8), np.float32), ValueError, r"mask must have shape \(H, W//2\+1\)"),
        (X4, np.zeros((3, 8, 5), np.float32), ValueError, "mask must have shape"),
        (np.zeros((1, 2, 0, 8), np.float32), M2, ValueError, "x is empty"),
        (X4, np.zeros((0, 5), np.float32), ValueError, "mask is empty"),
        (None, M2, TypeError, "x must be a float32 array, got None"),
        (X4.astype(np.int32), M2, TypeError, "x must be float32"),
    ],
)
def test_fft_filter_bad_input(x, mask, exc, match):
    with pytest.raises(exc, match=match):
        kernels.fft_filter(x, mask)


Q = np.zeros((1, 2, 4, 16), np.float32)


@pytest.mark.parametrize(
    "q, k, v, exc, match",
    [
        (Q[0], Q, Q, ValueError, "q must have shape"),
        (Q, Q[..., :8], Q, ValueError, "k must have shape"),
        (Q, Q, np.zeros((1, 2, 5, 16), np.float32), ValueError, "v must have the shape of k"),
        (np.zeros((1, 1, 2, 129), np.float32), np.zeros((1, 1, 2, 129), np.float32),
         np.zeros((1, 1, 2, 129), np.float32), ValueError, "D must be <= 128"),
        (Q.astype(np.float64), Q, Q, TypeError, "q must be float32"),
        (Q, np.zeros((1, 2, 0, 16), np.float32), np.zeros((1, 2, 0, 16), np.float32), ValueError, "k is empty"),
    ],
)
def test_cross_attention_bad_input(q, k, v, exc, match):
    with pytest.raises(exc, match=match):
        kernels.cross_attention(q, k, v)


def test_results_are_written_into_out_in_place():
    """out= receives the result itself (no temporary copied over): the call returns that very array."""
    x, mask = _fft_case((2, 3, 9, 10), per_channel=True)
    y = np.full_like(x, np.nan)
    assert kernels.fft_filter(x, mask, out=y) is y
    np.testing.assert_array_equal(y, kernels.fft_filter(x, mask))
    q, k, v = (RNG.standard_normal(s).astype(np.float32) for s in ((1, 2, 33, 16), (1, 2, 70, 16), (1, 2, 70, 16)))
    o = np.full_like(q, np.nan)
    assert kernels.cross_attention(q, k, v, out=o) is o
    np.testing.assert_array_equal(o, kernels.cross_attention(q, k, v))


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@pytest.mark.parametrize(
    "make_out, exc, match",
    [
        (lambda q: np.zeros(q.shape), TypeError, "out must be a float32 array, got dtype float64"),
        (lambda q: [0.0] * q.size, TypeError, "out must be a float32 numpy array"),
        (lambda q: np.zeros(q.shape[:3] + (8,), np.float32), ValueError, r"out must have shape \(1, 2, 4, 16\)"),
        (lambda q: np.zeros(q.shape[:3] + (32,), np.float32)[..., ::2], ValueError, "out must be C-contiguous"),
        (lambda q: _read_only(np.zeros_like(q)), ValueError, "out is read-only"),
        (lambda q: q, ValueError, "out must not share memory with the inputs"),
    ],
)
def test_bad_out_is_refused_and_inputs_kept(make_out, exc, match):
    """make_out builds the out= argument from the input it will be checked against."""
    q = RNG.standard_normal(Q.shape).astype(np.float32)
    before = q.copy()
    with pytest.raises(exc, match=match):
        kernels.cross_attention(q, q, q, out=make_out(q))
    np.testing.assert_array_equal(q, before)
    x, mask = _fft_case((1, 2, 4, 16), per_channel=False)
    with pytest.raises(exc, match=match):
        kernels.fft_filter(x, mask, out=make_out(x))


def test_non_finite_scale_is_refused():
    with pytest.raises(ValueError, match="scale must be finite"):
        kernels.cross_attention(Q, Q, Q, scale=float("nan"))


def test_compiled_module_checks_too():
    """The extension itself refuses bad arrays (no crash) even when called directly."""

    with pytest.raises(ValueError, match="C-contiguous"):
        _kernels.fft_filter(np.zeros((1, 2, 8, 16), np.float32)[..., ::2], M2, 0)
    with pytest.raises(TypeError, match="float32"):
        _kernels.cross_attention(Q.astype(np.float64), Q, Q, 1.0, 0)
    with pytest.raises(ValueError, match="mask must have shape"):
        _kernels.fft_filter(X4, np.zeros((7, 5), np.float32), 0)


def test_every_isa_variant_agrees():
    """DDE_KERNEL_ISA=generic forces the portable variant: it must give the same results."""
    code = ("import numpy as np; from diffdefect_edge import kernels, _kernels\n"
            "r = np.random.default_rng(0); x = r.standard_normal((2, 3, 21, 26)).astype(np.float32)\n"
            "m = r.random((3, 21, 14)).astype(np.float32); q = r.standard_normal((1, 2, 37, 48)).astype(np.float32)\n"
            "import sys; sys.stdout.buffer.write(np.concatenate([kernels.fft_filter(x, m).ravel(), "
            "kernels.cross_attention(q, q, q).ravel(), [len(_kernels.cpu_isa())]]).astype(np.float32).tobytes())\n")
    outs = {}
    for isa in ("generic", "native"):
        env = {**os.environ, "DDE_KERNEL_ISA": isa}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, cwd=REPO, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        outs[isa] = np.frombuffer(proc.stdout, np.float32)
    assert outs["generic"][-1] == len("generic")  # the variable really switched the variant
    np.testing.assert_allclose(outs["generic"][:-1], outs["native"][:-1], atol=2e-5)


# ---------------------------------------------------------------------------------------------- CUDA

@needs_gpu_emulation
@pytest.mark.parametrize("shape", [(2, 3, 77, 45, 16), (1, 2, 130, 200, 32), (2, 1, 65, 63, 33), (1, 1, 64, 64, 128),
                                   (1, 1, 1, 1, 1), (1, 2, 5, 130, 7)])
def test_cuda_cross_attention_algorithm_on_the_host_matches_reference(shape):
    """The CUDA kernel's phases (csrc/cuda/attention_program.h) run on the CPU thread by thread, also in reverse
    thread order: partial query and key tiles, head dims padded to 32, all four register-tile widths."""
    b, h, lq, lk, d = shape
    q, k, v = (RNG.standard_normal(s).astype(np.float32) for s in ((b, h, lq, d), (b, h, lk, d), (b, h, lk, d)))
    for reverse in (False, True):
        out = gpu_emulation.cross_attention_gpu_steps(q, k, v, 1 / np.sqrt(d), reverse)
        assert attention_err(out, q, k, v, 1 / np.sqrt(d)) < ATTENTION_REL_TOL, reverse


@needs_gpu_emulation
def test_cuda_cross_attention_algorithm_on_the_host_is_stable_for_huge_logits():
    """As test_cross_attention_is_stable_for_huge_logits, for the CUDA kernel's phases run on the host."""
    rng = np.random.default_rng(7)
    q = rng.integers(-3, 4, (1, 2, 40, 32)).astype(np.float32)
    k = rng.integers(-3, 4, (1, 2, 150, 32)).astype(np.float32)
    v = rng.standard_normal((1, 2, 150, 32)).astype(np.float32)
    out = gpu_emulation.cross_attention_gpu_steps(q, k, v, 100.0)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, attention_reference(q, k, v, 100.0), atol=1e-5)


@needs_gpu_emulation
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 7, 5), (1, 2, 37, 41), (1, 2, 80, 80), (2, 1, 20, 25),
                                   (1, 1, 9, 1), (1, 1, 1, 8), (1, 1, 97, 50), (1, 1, 200, 200)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_cuda_fft_filter_algorithm_on_the_host_matches_reference(shape, per_channel):
    """The CUDA kernel's steps (csrc/cuda/fft_filter_program.h) run on the CPU: the GPU's arithmetic and indexing
    are checked on every machine. Emulated blocks of 256, 7 and 1 threads, one in reverse thread order, must all
    agree with numpy: a step whose result depended on its threads' order would differ."""
    x, mask = _fft_case(shape, per_channel)
    ref = fft_reference(x, mask)
    for block_threads, reverse in ((256, False), (7, True), (1, False)):
        y = gpu_emulation.fft_filter_gpu_steps(x, mask, block_threads, reverse)
        assert y.shape == x.shape and y.dtype == np.float32
        assert rel_err(y, ref) < 1e-5, (block_threads, reverse)


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    return torch


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 7, 5), (1, 2, 37, 41), (8, 64, 80, 80), (1, 2, 200, 200)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_cuda_fft_filter_matches_reference(shape, per_channel):
    torch = _torch_cuda()
    x, mask = _fft_case(shape, per_channel)
    y = kernels.fft_filter(torch.from_numpy(x).cuda(), torch.from_numpy(mask).cuda())
    assert y.is_cuda
    assert rel_err(y.cpu().numpy(), fft_reference(x, mask)) < 1e-5


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("d", [16, 32, 64, 128])
def test_cuda_cross_attention_matches_reference(d):
    torch = _torch_cuda()
    q, k, v = (RNG.standard_normal(s).astype(np.float32) for s in ((2, 3, 77, d), (2, 3, 45, d), (2, 3, 45, d)))
    out = kernels.cross_attention(*(torch.from_numpy(a).cuda() for a in (q, k, v)))
    np.testing.assert_allclose(out.cpu().numpy(), attention_reference(q, k, v, 1 / np.sqrt(d)), atol=1e-4)


class _DeviceArray:
    """A stand-in CUDA array: only its ``__cuda_array_interface__`` (pointer, shape), never dereferenced."""

    def __init__(self, ptr: int, shape: tuple) -> None:
        self.__cuda_array_interface__ = {"data": (ptr, False), "shape": shape, "typestr": "<f4", "version": 3}


@needs_cuda_build
def test_cuda_out_overlapping_an_input_is_refused_before_any_launch():
    """Checked on the pointers alone, so it needs no GPU: on one, the kernel would read what it had overwritten."""
    base = 1 << 20
    x, mask = _DeviceArray(base, (1, 2, 8, 8)), _DeviceArray(base + 4096, (8, 5))
    with pytest.raises(ValueError, match=r"out must not share memory with the inputs \(x\)"):
        kernels.fft_filter(x, mask, out=_DeviceArray(base + 64, (1, 2, 8, 8)))
    # right after x's 512 bytes: no overlap, so the next check (the pointers are not device memory) speaks
    with pytest.raises(ValueError, match="is not device memory"):
        kernels.fft_filter(x, mask, out=_DeviceArray(base + 512, (1, 2, 8, 8)))
    q, k = _DeviceArray(base, (1, 2, 4, 16)), _DeviceArray(base + 8192, (1, 2, 6, 16))
    v = _DeviceArray(base + 16384, (1, 2, 6, 16))
    with pytest.raises(ValueError, match=r"out must not share memory with the inputs \(v\)"):
        kernels.cross_attention(q, k, v, out=_DeviceArray(base + 16384 + 764, (1, 2, 4, 16)))


@pytest.mark.cuda
@needs_cuda
def test_cuda_wrong_device_and_layout_are_refused():
    torch = _torch_cuda()
    x = torch.zeros(1, 2, 8, 8, device="cuda")
    with pytest.raises(ValueError, match="wrong device"):
        kernels.fft_filter(x, M2)
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.fft_filter(x.transpose(2, 3), torch.zeros(8, 5, device="cuda"))
    with pytest.raises(TypeError, match="float32"):
        kernels.fft_filter(x.double(), torch.zeros(8, 5, device="cuda"))
