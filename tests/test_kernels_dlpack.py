"""CUDA arguments given through DLPack: the capsule is read as its producer describes it, and every check on a
device argument (dtype, layout, emptiness, out=, overlap) runs on what was read, before any launch. The stand-in
device arrays below are never dereferenced, so none of this needs a GPU."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from conftest import needs_cuda, needs_cuda_build

from diffdefect_edge import _dlpack, kernels

_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class _DLPackDeviceArray:
    """A stand-in CUDA array that speaks only DLPack (as JAX or CuPy arrays may): a DLManagedTensor built here,
    describing memory at ``pointer`` that nobody reads. Records the stream each ``__dlpack__`` call asked for."""

    def __init__(self, pointer: int, shape: tuple, strides: tuple | None = None, dtype: tuple = (2, 32, 1),
                 byte_offset: int = 0) -> None:
        self._shape = (ctypes.c_int64 * len(shape))(*shape)
        self._strides = None if strides is None else (ctypes.c_int64 * len(strides))(*strides)
        tensor = _dlpack.DLTensor(
            data=pointer, device=_dlpack.DLDevice(_dlpack.DEVICE_CUDA, 0), ndim=len(shape),
            dtype=_dlpack.DLDataType(*dtype), shape=ctypes.cast(self._shape, ctypes.POINTER(ctypes.c_int64)),
            strides=None if strides is None else ctypes.cast(self._strides, ctypes.POINTER(ctypes.c_int64)),
            byte_offset=byte_offset)
        self._managed = _dlpack.DLManagedTensor(dl_tensor=tensor, manager_ctx=None, deleter=None)
        self.streams_asked: list = []

    def __dlpack_device__(self) -> tuple[int, int]:
        return _dlpack.DEVICE_CUDA, 0

    def __dlpack__(self, stream=None):
        self.streams_asked.append(stream)
        return _capsule_new(ctypes.addressof(self._managed), _dlpack.CAPSULE_NAME, None)


def test_a_capsule_is_read_as_its_producer_describes_it():
    """numpy is a real producer (CPU): pointer, shape, strides, dtype and device must come out as numpy says."""
    a = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    t = _dlpack.export(a, "a", None)
    assert (t.pointer, t.shape, t.device, t.is_float32) == (a.ctypes.data, (3, 4, 5), (_dlpack.DEVICE_CPU, 0), True)
    assert t.strides is None or t.strides == (20, 5, 1)
    view = a[:, 1:, ::2]  # offset start, strides in elements
    t = _dlpack.export(view, "view", None)
    assert (t.pointer, t.shape, t.strides) == (view.ctypes.data, (3, 3, 3), (20, 5, 2))
    t = _dlpack.export(np.zeros((2, 2), np.float64), "d", None)
    assert (t.dtype, t.is_float32) == ((_dlpack.DTYPE_FLOAT, 64, 1), False)
    assert _dlpack.device_of(a) == (_dlpack.DEVICE_CPU, 0)
    assert _dlpack.device_of([1.0]) is None


def test_a_failing_or_consumed_export_is_reported_with_the_argument_name():
    class Refuses:
        def __dlpack__(self, stream=None):
            raise BufferError("not exportable")

    with pytest.raises(ValueError, match=r"k: __dlpack__ failed: not exportable"):
        _dlpack.export(Refuses(), "k", None)
    capsule = np.zeros(3, np.float32).__dlpack__()
    ctypes.pythonapi.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
    ctypes.pythonapi.PyCapsule_SetName(capsule, b"used_dltensor")  # as a consumer that took it would

    class Consumed:
        def __dlpack__(self, stream=None):
            return capsule

    with pytest.raises(ValueError, match="q: __dlpack__ did not return an unused 'dltensor' capsule"):
        _dlpack.export(Consumed(), "q", None)
    ctypes.pythonapi.PyCapsule_SetName(capsule, b"dltensor")  # let numpy's destructor free it


def test_cpu_dlpack_arrays_stay_on_the_cpu_path():
    x = np.ones((1, 2, 6, 6), np.float32)
    mask = np.ones((6, 4), np.float32)
    assert not kernels._is_cuda(x)
    assert kernels._is_cuda(_DLPackDeviceArray(1 << 20, (1, 2, 6, 6)))
    np.testing.assert_allclose(kernels.fft_filter(x, mask), x, atol=1e-5)


@needs_cuda_build
def test_dlpack_device_arrays_are_checked_before_any_launch():
    base = 1 << 20
    x, mask = _DLPackDeviceArray(base, (1, 2, 8, 8)), _DLPackDeviceArray(base + 4096, (8, 5))
    with pytest.raises(ValueError, match=r"out= is required for CUDA arrays that are not torch tensors"):
        kernels.fft_filter(x, mask)
    with pytest.raises(ValueError, match=r"out must not share memory with the inputs \(x\)"):
        kernels.fft_filter(x, mask, out=_DLPackDeviceArray(base + 64, (1, 2, 8, 8)))
    # byte_offset counts: data 256 bytes before x's end but offset past it, so no overlap; the pointers were read
    # whole, so the next check (is this device memory?) speaks
    with pytest.raises(ValueError, match="x is not device memory"):
        kernels.fft_filter(x, mask, out=_DLPackDeviceArray(base + 256, (1, 2, 8, 8), byte_offset=256))
    assert set(x.streams_asked) == {_dlpack.LEGACY_DEFAULT_STREAM}  # the producer is told which stream reads it
    with pytest.raises(TypeError, match=r"mask must be float32, got DLPack dtype \(code, bits, lanes\) \(2, 64, 1\)"):
        kernels.fft_filter(x, _DLPackDeviceArray(base + 4096, (8, 5), dtype=(2, 64, 1)),
                           out=_DLPackDeviceArray(base + 8192, (1, 2, 8, 8)))
    with pytest.raises(ValueError, match="mask is empty"):
        kernels.fft_filter(x, _DLPackDeviceArray(base + 4096, (8, 0)), out=_DLPackDeviceArray(base + 8192, (1, 2, 8, 8)))
    with pytest.raises(ValueError, match="mask must have shape"):
        kernels.fft_filter(x, _DLPackDeviceArray(base + 4096, (8, 4)), out=_DLPackDeviceArray(base + 8192, (1, 2, 8, 8)))
    with pytest.raises(ValueError, match="wrong device"):
        kernels.fft_filter(x, np.ones((8, 5), np.float32), out=_DLPackDeviceArray(base + 8192, (1, 2, 8, 8)))


@needs_cuda_build
def test_dlpack_layout_must_be_c_contiguous_except_along_size_one_dims():
    base = 1 << 20
    q = _DLPackDeviceArray(base, (1, 2, 4, 16))
    k = _DLPackDeviceArray(base + 8192, (1, 2, 6, 16), strides=(192, 96, 1, 6))  # transposed last two axes
    v = _DLPackDeviceArray(base + 16384, (1, 2, 6, 16))
    with pytest.raises(ValueError, match="k must be C-contiguous on CUDA"):
        kernels.cross_attention(q, k, v, out=_DLPackDeviceArray(base + 32768, (1, 2, 4, 16)))
    # a size-1 batch dim with any stride is still C-contiguous: the checks pass on to the device check
    k = _DLPackDeviceArray(base + 8192, (1, 2, 6, 16), strides=(7, 96, 16, 1))
    with pytest.raises(ValueError, match="q is not device memory"):
        kernels.cross_attention(q, k, v, out=_DLPackDeviceArray(base + 32768, (1, 2, 4, 16)))


class _DLPackOnly:
    """A real CUDA tensor seen only through DLPack (its ``__cuda_array_interface__`` hidden)."""

    def __init__(self, tensor) -> None:
        self.tensor = tensor

    def __dlpack_device__(self):
        return self.tensor.__dlpack_device__()

    def __dlpack__(self, stream=None):
        return self.tensor.__dlpack__(stream=stream)


@pytest.mark.cuda
@needs_cuda
def test_cuda_kernels_run_on_dlpack_only_arrays():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 20, 25)).astype(np.float32)
    mask = rng.random((20, 13)).astype(np.float32)
    y = torch.empty(x.shape, device="cuda")
    kernels.fft_filter(_DLPackOnly(torch.from_numpy(x).cuda()), _DLPackOnly(torch.from_numpy(mask).cuda()),
                       out=_DLPackOnly(y))
    torch.cuda.synchronize()
    reference = np.fft.irfft2(np.fft.rfft2(x.astype(np.float64)) * mask, s=(20, 25))
    np.testing.assert_allclose(y.cpu().numpy(), reference, atol=1e-5)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((1, 2, 33, 32), (1, 2, 50, 32), (1, 2, 50, 32)))
    o = torch.empty(q.shape, device="cuda")
    kernels.cross_attention(*(_DLPackOnly(torch.from_numpy(a).cuda()) for a in (q, k, v)), out=_DLPackOnly(o))
    torch.cuda.synchronize()
    torch_out = torch.nn.functional.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)))
    np.testing.assert_allclose(o.cpu().numpy(), torch_out.numpy(), atol=1e-4)
