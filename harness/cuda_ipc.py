"""The zero-copy GPU transport of the scoring: a CUDA VMM allocation shared as a POSIX file descriptor.

PyTorch's CUDA IPC (cudaIpcGetMemHandle) is refused across PID namespaces, so the scorer allocates
the logits buffer with the driver's virtual memory management API instead: cuMemCreate with
CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, exported as a file descriptor that travels to the model
process over the Unix socket (SCM_RIGHTS) like the CPU transport's memfd. Both processes map the same
GPU memory; the model copies its logits in (device to device), the scorer reads them in place. The
model process cannot resize or free the allocation under the scorer (the scorer's mapping holds it).

`HostBuffer` (harness/channel.py's sealed memfd, with cudaHostRegister on both sides) is the simple
path that copies through host memory; benchmarks/gpu_transport.py measures both.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

CU_MEM_ALLOCATION_TYPE_PINNED = 1
CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 1
CU_MEM_LOCATION_TYPE_DEVICE = 1
CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3
CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 1


class _Location(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _AllocFlags(ctypes.Structure):
    _fields_ = [
        ("compressionType", ctypes.c_ubyte),
        ("gpuDirectRDMACapable", ctypes.c_ubyte),
        ("usage", ctypes.c_ushort),
        ("reserved", ctypes.c_ubyte * 4),
    ]


class _Prop(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("requestedHandleTypes", ctypes.c_int),
        ("location", _Location),
        ("win32HandleMetaData", ctypes.c_void_p),
        ("allocFlags", _AllocFlags),
    ]


class _Access(ctypes.Structure):
    _fields_ = [("location", _Location), ("flags", ctypes.c_int)]


_LIB = None


def _cu():
    global _LIB
    if _LIB is None:
        _LIB = ctypes.CDLL("libcuda.so.1")
    return _LIB


def _check(rc: int, what: str) -> None:
    if rc != 0:
        name = ctypes.c_char_p()
        _cu().cuGetErrorName(rc, ctypes.byref(name))
        raise RuntimeError(f"{what} failed: {name.value.decode() if name.value else rc}")


def _prop(device: int) -> _Prop:
    p = _Prop()
    p.type = CU_MEM_ALLOCATION_TYPE_PINNED
    p.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
    p.location = _Location(CU_MEM_LOCATION_TYPE_DEVICE, device)
    return p


def _granularity(device: int) -> int:
    g = ctypes.c_size_t()
    p = _prop(device)
    _check(
        _cu().cuMemGetAllocationGranularity(
            ctypes.byref(g), ctypes.byref(p), CU_MEM_ALLOC_GRANULARITY_RECOMMENDED
        ),
        "cuMemGetAllocationGranularity",
    )
    return int(g.value)


class _CAI:
    def __init__(self, ptr: int, n: int):
        self.__cuda_array_interface__ = {
            "shape": (n,),
            "typestr": "<f4",
            "data": (ptr, False),
            "version": 3,
            "strides": None,
        }


class VmmBuffer:
    """A mapped VMM allocation of at least `nbytes` on `device` (an int). Created by the scorer
    (exporting a fd) or imported from one by a model process."""

    def __init__(self, nbytes: int, device: int, fd: int | None = None):
        import torch

        torch.cuda.init()
        torch.cuda.set_device(device)
        torch.zeros(1, device=f"cuda:{device}")  # make the primary context current in this thread
        self.device = device
        gran = _granularity(device)
        self.size = (int(nbytes) + gran - 1) // gran * gran
        lib = _cu()
        self.handle = ctypes.c_ulonglong()
        if fd is None:
            p = _prop(device)
            _check(
                lib.cuMemCreate(ctypes.byref(self.handle), ctypes.c_size_t(self.size), ctypes.byref(p), 0),
                "cuMemCreate",
            )
            out = ctypes.c_int(-1)
            _check(
                lib.cuMemExportToShareableHandle(
                    ctypes.byref(out),
                    self.handle,
                    CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                    ctypes.c_ulonglong(0),
                ),
                "cuMemExportToShareableHandle",
            )
            self.fd = out.value
        else:
            _check(
                lib.cuMemImportFromShareableHandle(
                    ctypes.byref(self.handle), ctypes.c_void_p(fd), CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
                ),
                "cuMemImportFromShareableHandle",
            )
            self.fd = fd
        self.ptr = ctypes.c_ulonglong()
        _check(
            lib.cuMemAddressReserve(
                ctypes.byref(self.ptr),
                ctypes.c_size_t(self.size),
                ctypes.c_size_t(0),
                ctypes.c_ulonglong(0),
                ctypes.c_ulonglong(0),
            ),
            "cuMemAddressReserve",
        )
        _check(
            lib.cuMemMap(
                self.ptr, ctypes.c_size_t(self.size), ctypes.c_size_t(0), self.handle, ctypes.c_ulonglong(0)
            ),
            "cuMemMap",
        )
        acc = _Access(_Location(CU_MEM_LOCATION_TYPE_DEVICE, device), CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
        _check(
            lib.cuMemSetAccess(self.ptr, ctypes.c_size_t(self.size), ctypes.byref(acc), ctypes.c_size_t(1)),
            "cuMemSetAccess",
        )

    def tensor(self, shape: tuple[int, ...]):
        """A float32 torch tensor of `shape` over the mapping (no copy)."""
        import math

        import torch

        n = math.prod(shape)
        if n * 4 > self.size:
            raise ValueError("the buffer is smaller than the tensor asked for")
        return torch.as_tensor(_CAI(self.ptr.value, n), device=f"cuda:{self.device}").view(*shape)

    def close(self) -> None:
        lib = _cu()
        lib.cuMemUnmap(self.ptr, ctypes.c_size_t(self.size))
        lib.cuMemAddressFree(self.ptr, ctypes.c_size_t(self.size))
        lib.cuMemRelease(self.handle)
        if self.fd is not None and self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
