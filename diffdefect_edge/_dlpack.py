"""What a DLPack capsule describes (pointer, shape, strides, dtype, device), read with ctypes, no framework needed.

Only the legacy, unversioned ``dltensor`` capsule is read: every producer must still export it when
``__dlpack__`` is called without ``max_version``. The capsule is not consumed (not renamed ``used_dltensor``), so
its own destructor releases the producer's tensor; keep the returned :class:`DLPackTensor` (it holds the capsule)
for as long as the memory is used.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

# DLDeviceType values (dlpack.h); kDLCUDAHost (3, pinned host memory) is not a device type for the kernels
DEVICE_CPU, DEVICE_CUDA, DEVICE_CUDA_MANAGED = 1, 2, 13
CUDA_DEVICE_TYPES = (DEVICE_CUDA, DEVICE_CUDA_MANAGED)
DTYPE_FLOAT = 2  # DLDataTypeCode kDLFloat
# the __dlpack__(stream=...) value that asks a CUDA producer to make its data ready for the legacy default stream
LEGACY_DEFAULT_STREAM = 1
CAPSULE_NAME = b"dltensor"


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),  # in elements; NULL means C-contiguous
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


@dataclass(frozen=True)
class DLPackTensor:
    pointer: int  # address of the first element (data + byte_offset)
    shape: tuple[int, ...]
    strides: tuple[int, ...] | None  # in elements, None when the producer says C-contiguous
    dtype: tuple[int, int, int]  # (type code, bits, lanes)
    device: tuple[int, int]  # (DLDeviceType, device id)
    capsule: Any  # keeps the producer's tensor alive

    @property
    def is_float32(self) -> bool:
        return self.dtype == (DTYPE_FLOAT, 32, 1)


def device_of(obj: Any) -> tuple[int, int] | None:
    """``obj.__dlpack_device__()`` as (DLDeviceType, id), or None when obj does not speak DLPack."""
    method = getattr(obj, "__dlpack_device__", None)
    if method is None:
        return None
    device_type, device_id = method()
    return int(device_type), int(device_id)


def export(obj: Any, name: str, stream: int | None) -> DLPackTensor:
    """Ask ``obj`` for a DLPack capsule (synchronised with ``stream``, in ``__dlpack__``'s numbering) and read it."""
    try:
        capsule = obj.__dlpack__(stream=stream)
    except (TypeError, BufferError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name}: __dlpack__ failed: {exc}") from exc
    try:
        address = _capsule_pointer(capsule, CAPSULE_NAME)
    except ValueError as exc:  # wrong capsule name: already consumed, or a versioned capsule
        raise ValueError(f"{name}: __dlpack__ did not return an unused 'dltensor' capsule ({exc})") from exc
    tensor = DLManagedTensor.from_address(address).dl_tensor
    if tensor.ndim < 0:
        raise ValueError(f"{name}: DLPack tensor has a negative ndim ({tensor.ndim})")
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    strides = tuple(tensor.strides[i] for i in range(tensor.ndim)) if tensor.strides else None
    return DLPackTensor(
        pointer=(tensor.data or 0) + tensor.byte_offset,
        shape=shape,
        strides=strides,
        dtype=(tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes),
        device=(tensor.device.device_type, tensor.device.device_id),
        capsule=capsule,
    )
