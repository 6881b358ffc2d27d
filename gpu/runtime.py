"""The CUDA runtime of one engine: its context, compiled kernels, stream and device memory.

One `Runtime` per engine, owned by the thread that drives it (`activate()` makes its context current
on another thread). Kernels come from `gpu/kernels/<name>.cu`: a cubin prebuilt by `gpu.kernel_cache`
when $ORCD_CUBIN_DIR holds one for this source, defines and arch, else compiled by PyCUDA
(`pycuda.compiler.compile`) for the device's own arch with nvcc's cache; one module per (kernel, -D
defines), launched as prepared calls on the runtime's stream. Inside `programmatic()` (graph capture) the
kernels that call common.cuh's `pdl_wait()` are launched through cuda-bindings' `cuLaunchKernelEx` with
programmatic stream serialization instead: each may be scheduled while the kernel before it finishes and
waits for it where it reads its output. Every allocation is counted by
purpose ("weights", "kv_cache", "scratch", ...). Imports PyCUDA: only the CUDA backend imports this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import pycuda.driver as cuda
from pycuda import gpuarray
from pycuda.compiler import compile as compile_cubin

from . import kernel_cache
from .errors import BackendUnavailable, OutOfMemory

logger = logging.getLogger(__name__)

KERNEL_DIR = kernel_cache.KERNEL_DIR
GIB = 1024**3
# numpy storage of the operand type: bf16 has no numpy dtype, so it travels as its raw 16 bits
OPERAND_DTYPES = {"f16": np.dtype(np.float16), "bf16": np.dtype(np.uint16)}
PDL_MARK = "pdl_wait()"  # in a kernel's source: it may be launched with programmatic serialization
ENV_PDL = "ORCD_PDL"  # "0": graphs launch every kernel plainly (an A/B switch for benchmarks)
_CTYPES = {"P": ctypes.c_void_p, "i": ctypes.c_int, "I": ctypes.c_uint, "f": ctypes.c_float,
           "d": ctypes.c_double, "Q": ctypes.c_uint64, "q": ctypes.c_int64}


def device_count() -> int:
    cuda.init()
    return cuda.Device.count()


class Runtime:
    """Context, stream, kernel cache and accounted allocations on one device."""

    def __init__(self, device: int = 0, dtype: str = "f16"):
        if dtype not in OPERAND_DTYPES:
            raise BackendUnavailable(f"operand dtype {dtype!r} not in {sorted(OPERAND_DTYPES)}")
        cuda.init()
        if not 0 <= device < cuda.Device.count():
            raise BackendUnavailable(f"CUDA device {device} does not exist ({cuda.Device.count()} found)")
        self.device = cuda.Device(device)
        # current on the creating thread; MAP_HOST: kernels may write mapped pinned memory (the sampler's ids)
        self.context = self.device.make_context(flags=cuda.ctx_flags.MAP_HOST)
        self.stream = cuda.Stream()
        major, minor = self.device.compute_capability()
        self.arch = f"sm_{major}{minor}"
        self.name = self.device.name()
        self.n_sm = self.device.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
        self.dtype = dtype
        self.operand = OPERAND_DTYPES[dtype]
        self.allocated: dict[str, int] = defaultdict(int)  # purpose -> bytes
        self._functions: dict[tuple, cuda.Function] = {}
        self._names: dict[int, str] = {}  # id(function) -> kernel name, for profiles
        self._pdl: dict[int, ProgrammaticKernel] = {}  # id(function) -> its cuda-bindings twin
        self.pdl_enabled = os.environ.get(ENV_PDL, "1") != "0"
        self._programmatic = False  # inside programmatic(): launch self._pdl kernels with cuLaunchKernelEx
        self.pdl_launches = 0  # kernels launched programmatically so far (tests, logs)
        self.profile: list | None = None  # set to [] to time every launch: (name, start, end) events
        logger.info("CUDA device %d: %s (%s, %d SMs), operands %s", device, self.name, self.arch,
                    self.n_sm, dtype)

    # --- kernels ---------------------------------------------------------------------------------
    def kernel(self, name: str, arg_types: str, **defines: int) -> cuda.Function:
        """The prepared `__global__ name` of kernels/<name>.cu built with `-D KEY=value` defines (and, when
        its source calls `pdl_wait()`, its cuda-bindings twin for `programmatic()` launches)."""
        key = (name, arg_types, tuple(sorted(defines.items())))
        fn = self._functions.get(key)
        if fn is None:
            source = (KERNEL_DIR / f"{name}.cu").read_text()
            prebuilt = kernel_cache.cached(name, defines, self.dtype, self.arch)
            if prebuilt is not None:
                cubin = prebuilt.read_bytes()
            else:
                opts = kernel_cache.options(defines, self.dtype)
                cubin = compile_cubin(source, options=opts, arch=self.arch, no_extern_c=True,
                                      include_dirs=[str(KERNEL_DIR)])
            fn = cuda.module_from_buffer(cubin).get_function(name)
            fn.prepare(arg_types)
            self._functions[key] = fn
            self._names[id(fn)] = name + "".join(f" {k}={v}" for k, v in sorted(defines.items()))
            if PDL_MARK in source and self.pdl_enabled:
                try:
                    self._pdl[id(fn)] = ProgrammaticKernel(cubin, name, arg_types)
                except (ImportError, BackendUnavailable) as exc:
                    logger.warning("programmatic launches off (%s): graphs launch kernels plainly", exc)
                    self.pdl_enabled = False
        return fn

    @contextlib.contextmanager
    def programmatic(self) -> Iterator[None]:
        """Launch the kernels that support it with programmatic stream serialization while in the block
        (a graph capture: the launches' host cost is paid once)."""
        self._programmatic = True
        try:
            yield
        finally:
            self._programmatic = False

    def launch(self, fn: cuda.Function, grid: tuple[int, ...], block: tuple[int, ...], *args,
               shared: int = 0) -> None:
        """Launch on the runtime's stream with `shared` bytes of dynamic shared memory."""
        twin = self._pdl.get(id(fn)) if self._programmatic else None
        if twin is not None:
            twin.launch(self.stream.handle, grid, block, args, shared)
            self.pdl_launches += 1
            return
        if self.profile is None:
            fn.prepared_async_call(grid, block, self.stream, *args, shared_size=shared)
            return
        start, end = cuda.Event(), cuda.Event()
        start.record(self.stream)
        fn.prepared_async_call(grid, block, self.stream, *args, shared_size=shared)
        end.record(self.stream)
        self.profile.append((self._names[id(fn)], start, end))

    def profile_report(self) -> dict[str, tuple[int, float]]:
        """Kernel variant -> (launches, total ms) of the launches timed since `profile = []`."""
        self.stream.synchronize()
        out: dict[str, tuple[int, float]] = {}
        for name, start, end in self.profile or []:
            count, ms = out.get(name, (0, 0.0))
            out[name] = (count + 1, ms + end.time_since(start))
        return out

    # --- memory ----------------------------------------------------------------------------------
    def mem_info(self) -> tuple[int, int]:
        """(free, total) bytes on the device."""
        return cuda.mem_get_info()

    def check_fits(self, nbytes: int, what: str) -> None:
        """Refuse before allocating when `nbytes` exceed the device's free memory."""
        free, _ = self.mem_info()
        if nbytes > free:
            raise OutOfMemory(
                f"{what} needs {nbytes / GIB:.2f} GiB, {free / GIB:.2f} GiB free on {self.name}"
            )

    def empty(self, shape: tuple[int, ...] | int, dtype, purpose: str) -> gpuarray.GPUArray:
        """An uninitialised device array, counted under `purpose`; `OutOfMemory` naming the purpose,
        shape, dtype and sizes when the device cannot hold it."""
        dtype = np.dtype(dtype)
        dims = [shape] if isinstance(shape, int) else list(shape)
        nbytes = int(np.prod(dims)) * dtype.itemsize

        def allocate(n: int):
            try:
                return cuda.mem_alloc(n)
            except cuda.MemoryError as exc:
                free, total = self.mem_info()
                held = sum(self.allocated.values())
                raise OutOfMemory(
                    f"{purpose}: cannot allocate {dims} {dtype.name} ({format_bytes(n)}): "
                    f"{format_bytes(free)} free of {format_bytes(total)} on {self.name}, "
                    f"{format_bytes(held)} held by this engine"
                ) from exc

        arr = gpuarray.GPUArray(shape, dtype, allocator=allocate)
        self.allocated[purpose] += nbytes
        return arr

    def to_device(self, host: np.ndarray, purpose: str) -> gpuarray.GPUArray:
        """A device copy of `host` (synchronous), counted under `purpose`."""
        host = np.ascontiguousarray(host)
        arr = self.empty(host.shape, host.dtype, purpose)
        cuda.memcpy_htod(arr.gpudata, host)
        return arr

    def memory_report(self) -> str:
        parts = ", ".join(f"{k} {v / GIB:.3f} GiB" for k, v in sorted(self.allocated.items()))
        return f"{sum(self.allocated.values()) / GIB:.3f} GiB allocated ({parts})"

    # --- context ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Make this runtime's context current for the block (a no-op on the owning thread)."""
        if cuda.Context.get_current() == self.context:
            yield
            return
        self.context.push()
        try:
            yield
        finally:
            cuda.Context.pop()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        """Free the context (and with it every allocation of this runtime)."""
        with self.activate():
            self.stream.synchronize()
        self._functions.clear()
        self.context.detach()
        self.allocated.clear()


class ProgrammaticKernel:
    """A kernel loaded a second time through cuda-bindings (PyCUDA's Function exposes no handle), launched
    with `cuLaunchKernelEx` and the programmatic-stream-serialization attribute on the same context."""

    def __init__(self, cubin: bytes, name: str, arg_types: str):
        from .cuda_graphs import driver

        self.cu = cu = driver()
        self.name = name
        self.module = _checked(cu, cu.cuModuleLoadData(cubin), f"loading {name}")
        self.function = _checked(cu, cu.cuModuleGetFunction(self.module, name.encode()), f"finding {name}")
        self.types = tuple(_CTYPES[c] for c in arg_types)
        attr = cu.CUlaunchAttribute()
        attr.id = cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        attr.value.programmaticStreamSerializationAllowed = 1
        self.attrs = [attr]
        self.shared_limit = 48 * 1024  # dynamic shared memory allowed without raising the attribute

    def launch(self, stream_handle: int, grid, block, args, shared: int) -> None:
        cu = self.cu
        if shared > self.shared_limit:
            attr = cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            _checked(cu, cu.cuFuncSetAttribute(self.function, attr, shared), f"{self.name}: shared memory")
            self.shared_limit = shared
        config = cu.CUlaunchConfig()
        config.gridDimX, config.gridDimY, config.gridDimZ = (*grid, 1, 1)[:3]
        config.blockDimX, config.blockDimY, config.blockDimZ = (*block, 1, 1)[:3]
        config.sharedMemBytes = shared
        config.hStream = cu.CUstream(stream_handle)
        config.attrs = self.attrs
        config.numAttrs = len(self.attrs)
        values = tuple(float(a) if t in (ctypes.c_float, ctypes.c_double) else int(a or 0)
                       for a, t in zip(args, self.types, strict=True))
        from .cuda_graphs import GraphError

        _checked(cu, cu.cuLaunchKernelEx(config, self.function, (values, self.types), 0),
                 f"launching {self.name}", GraphError)


def _checked(cu, result, what: str, error: type[Exception] = BackendUnavailable):
    if result[0] != cu.CUresult.CUDA_SUCCESS:
        raise error(f"{what} through cuda-bindings failed: {result[0]}")
    return result[1] if len(result) > 1 else None


def format_bytes(n: int) -> str:
    """Bytes as B, KiB, MiB or GiB with two decimals ("8.00 MiB")."""
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def to_operand(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values -> the operand type's numpy storage (bf16: round to nearest even, as raw bits)."""
    if dtype == "f16":
        return np.asarray(x, dtype=np.float16)
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)


def from_operand(x: np.ndarray, dtype: str) -> np.ndarray:
    """The operand type's numpy storage -> float32."""
    if dtype == "f16":
        return np.asarray(x, dtype=np.float32)
    return (np.asarray(x, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def ptr(arr: gpuarray.GPUArray | None) -> int:
    """Device address of an array (0 for None, the kernels' null)."""
    return 0 if arr is None else int(arr.gpudata)
