"""GPU batching physics: kernels that measure why batching and quantization cut the cost of a token.

One decode step of a transformer multiplies each request's activation row by every weight of the
model. The weights are the same for every request, so a batch of ``B`` requests can read each weight
**once** and apply it ``B`` times: the bytes barely grow with ``B`` while the FLOPs grow ``B``-fold.
At batch 1 the step waits on memory and the arithmetic units idle; until the batch reaches the
**ridge** (``roofline``) each extra request is nearly free, which is why bigger batches cut the cost
per token. Two things move the ridge:

- **weight-only int8**: weights stored in one byte with a scale per output channel, dequantized
  inside the kernel. Half the bytes of fp16, so about twice the tokens per second while the step is
  memory-bound;
- the **KV cache**: attention reads each request's own keys and values, bytes that grow with the
  context and are shared by no one, so long contexts erode the gain from batching.

The kernels take arrays and run where the arrays live: NumPy arrays run the NumPy twin, CuPy arrays
the GPU code (``backend.array_module``). ``make_layer`` & co. draw on the host from named random
streams and copy to the process's backend.

- ``gemm_step``: ``Y = X W`` through the vendor GEMM (``numpy.matmul`` / ``cupy.matmul``).
- ``tiled_matvec``: the hand-written CUDA kernel (``CUDA_SOURCE``, fp16 or int8 weights): each
  thread block owns a tile of output columns for up to ``MAX_BATCH_PER_BLOCK`` rows of the batch and
  reads each weight of its tile once, applying it to every row. Its NumPy twin walks the same tiles.
- ``rowwise_matvec``: one matrix-vector product per row, the weights read ``B`` times: batching
  without weight reuse, for contrast.
- ``attention_step``: one decode step's attention over a KV cache (grouped-query heads).

``measure_curve`` times a kernel over batch sizes (``cupyx.profiler.benchmark`` on a GPU, repeated
``perf_counter`` after warm-up on a CPU) and reports seconds, achieved GB/s and TFLOP/s and the
fraction of the device's peak (``CURVE_COLUMNS``). On a GPU the peak is the datasheet's
(``data/hardware.csv``); a CPU has no datasheet figure, so ``measure_peaks`` measures it (a large
matmul for FLOP/s, a threaded sum over a large array for bandwidth) and each row records it.
``fit_curve`` fits the roofline to a measured curve (its overhead fixed at the cost of a tiny step,
``measure_overhead_s``) and ``RooflineFit.service_time`` gives the simulator its service-time curve;
``measured_hardware`` turns a CPU's measured peaks into a ``profiles.Hardware`` ("this CPU,
measured"). The curves measured for the book ship in ``data/`` and load with ``load_kernel_curves``.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import os
import platform
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from ._validate import _kind, check_in, check_int, check_positive
from .backend import Backend, array_module, backend, to_device
from .profiles import Hardware, hardware_names, load_hardware
from .rng import stream
from .roofline import RooflineFit, StepTraffic, fit_roofline
from .schema import check_columns

__all__ = [
    "WEIGHT_DTYPES",
    "ACTIVATION_DTYPES",
    "KERNELS",
    "MAX_BATCH_PER_BLOCK",
    "TWIN_TILE_COLUMNS",
    "CUDA_SOURCE",
    "CURVE_COLUMNS",
    "Layer",
    "StepConfig",
    "Peaks",
    "quantize_int8",
    "dequantize",
    "make_layer",
    "make_activations",
    "make_kv_cache",
    "gemm_step",
    "tiled_matvec",
    "rowwise_matvec",
    "attention_step",
    "launch_config",
    "time_calls_s",
    "measure_peaks",
    "measure_overhead_s",
    "device_peaks",
    "library_versions",
    "measure_curve",
    "with_peaks",
    "load_kernel_curves",
    "fit_curve",
    "measured_hardware",
]

#: Weight storage the kernels accept. bf16 is refused: neither NumPy nor CuPy has a bfloat16 array.
WEIGHT_DTYPES: tuple[str, ...] = ("fp32", "fp16", "int8")
#: Activations and KV cache: fp32 on a CPU (BLAS has no fp16), fp16 on a GPU.
ACTIVATION_DTYPES: tuple[str, ...] = ("fp32", "fp16")
#: What ``measure_curve`` can time.
KERNELS: tuple[str, ...] = ("gemm", "tiled", "rowwise", "attention")
#: Batch rows one CUDA block serves with one read of its weight tile (a larger batch takes more blocks).
MAX_BATCH_PER_BLOCK = 16
#: Output columns per tile in the NumPy twin: 1024 x 256 fp32 is 1 MiB, a tile that stays in L2.
TWIN_TILE_COLUMNS = 256

_NP_DTYPE = {"fp32": np.float32, "fp16": np.float16, "int8": np.int8}
_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
_DTYPE_NAME = {np.dtype(v): k for k, v in _NP_DTYPE.items()}


def _check_dtype(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value == "bf16":
        raise ValueError(
            f"{name} 'bf16' is not supported: NumPy and CuPy have no bfloat16 arrays; use 'fp16' "
            f"(the same bytes). Allowed: {', '.join(map(repr, allowed))}"
        )
    return check_in(name, value, allowed)


# --------------------------------------------------------------------------------------------------
# The CUDA kernel
# --------------------------------------------------------------------------------------------------

#: CUDA C++ of the batched matrix-vector kernels, compiled by CuPy (NVRTC) on first use.
CUDA_SOURCE = r"""
#include <cuda_fp16.h>

#define WARPS 8        // warps per block; they split the rows k of the weight tile between them
#define MAX_BATCH 16   // batch rows per block; blockIdx.y picks which 16 rows
#define UNROLL 8       // weight rows each warp loads before using them: bytes in flight hide latency

// COLS adjacent weights of row k from column n: a 4-byte load per lane, 128 bytes per warp (coalesced).
struct Fp16Weights {
    static constexpr int COLS = 2;
    const __half2* w;
    __device__ void load(size_t k, int n, int n_dim, float* out) const {
        const float2 v = __half22float2(w[(k * n_dim + n) / 2]);
        out[0] = v.x; out[1] = v.y;
    }
};
struct Int8Weights {   // weight-only int8: the per-column scale is applied once, to the sum
    static constexpr int COLS = 4;
    const char4* w;
    __device__ void load(size_t k, int n, int n_dim, float* out) const {
        const char4 v = w[(k * n_dim + n) / 4];
        out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
    }
};

// y[b, n] = scale[n] * sum_k x[b, k] w[k, n] for one tile of 32 * COLS columns and up to MAX_BATCH rows.
// Lane l owns COLS columns; warp v walks rows k = v, v + WARPS, ...: every weight of the tile is read
// from memory once by this block, held in registers and applied to all of its batch rows. x is tiny
// and every lane of a warp reads the same x[b, k] (one broadcast from L1). Accumulation is fp32.
// Untested on a GPU so far: the parity tests marked `gpu` check it where a device is lent.
template <typename Weights>
__device__ void tile_matvec(const __half* __restrict__ x, Weights weights, const float* __restrict__ scales,
                            float* __restrict__ y, int batch, int k_dim, int n_dim) {
    constexpr int COLS = Weights::COLS;
    constexpr int TILE = 32 * COLS;
    __shared__ float tile_sum[MAX_BATCH][TILE];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int n0 = blockIdx.x * TILE + lane * COLS;
    const int b0 = blockIdx.y * MAX_BATCH;
    const int rows = min(MAX_BATCH, batch - b0);

    for (int i = threadIdx.x; i < MAX_BATCH * TILE; i += blockDim.x) (&tile_sum[0][0])[i] = 0.0f;

    float acc[MAX_BATCH][COLS];
#pragma unroll
    for (int b = 0; b < MAX_BATCH; ++b)
#pragma unroll
        for (int c = 0; c < COLS; ++c) acc[b][c] = 0.0f;

    if (n0 < n_dim) {  // n_dim % COLS == 0, so a lane's columns are all in range or all out
        for (int k0 = warp; k0 < k_dim; k0 += WARPS * UNROLL) {
            float wk[UNROLL][COLS];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {  // UNROLL independent loads in flight per lane
                const int k = k0 + u * WARPS;
                if (k < k_dim) {
                    weights.load(k, n0, n_dim, wk[u]);
                } else {
#pragma unroll
                    for (int c = 0; c < COLS; ++c) wk[u][c] = 0.0f;
                }
            }
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const int k = min(k0 + u * WARPS, k_dim - 1);  // past the end wk is 0: any x will do
                const __half* xk = x + (size_t)b0 * k_dim + k;
#pragma unroll
                for (int b = 0; b < MAX_BATCH; ++b) {
                    if (b < rows) {
                        const float xb = __half2float(xk[(size_t)b * k_dim]);
#pragma unroll
                        for (int c = 0; c < COLS; ++c) acc[b][c] = fmaf(xb, wk[u][c], acc[b][c]);
                    }
                }
            }
        }
    }
    __syncthreads();
    for (int v = 0; v < WARPS; ++v) {  // the warps' partial sums, added in a fixed order: deterministic
        if (warp == v) {
#pragma unroll
            for (int b = 0; b < MAX_BATCH; ++b)
#pragma unroll
                for (int c = 0; c < COLS; ++c) tile_sum[b][lane * COLS + c] += acc[b][c];
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < rows * TILE; i += blockDim.x) {
        const int b = i / TILE;
        const int n = blockIdx.x * TILE + i % TILE;
        if (n < n_dim) {
            const float s = tile_sum[b][i % TILE];
            y[(size_t)(b0 + b) * n_dim + n] = scales != nullptr ? s * scales[n] : s;
        }
    }
}

extern "C" __global__ void __launch_bounds__(32 * WARPS)
batched_matvec_fp16(const __half* x, const __half* w, float* y, int batch, int k_dim, int n_dim) {
    tile_matvec(x, Fp16Weights{reinterpret_cast<const __half2*>(w)}, nullptr, y, batch, k_dim, n_dim);
}

extern "C" __global__ void __launch_bounds__(32 * WARPS)
batched_matvec_int8(const __half* x, const signed char* w, const float* scales, float* y,
                    int batch, int k_dim, int n_dim) {
    tile_matvec(x, Int8Weights{reinterpret_cast<const char4*>(w)}, scales, y, batch, k_dim, n_dim);
}
"""

_KERNEL_NAMES = {"fp16": "batched_matvec_fp16", "int8": "batched_matvec_int8"}
_COLUMNS_PER_LANE = {"fp16": 2, "int8": 4}
_THREADS_PER_BLOCK = 256  # 8 warps, as WARPS in the source


def launch_config(batch_size: int, d_out: int, dtype: str) -> tuple[tuple[int, int], tuple[int]]:
    """Grid and block of ``tiled_matvec``'s CUDA launch: (column tiles, batch chunks), 256 threads.

    >>> launch_config(40, 16384, "fp16")
    ((256, 3), (256,))
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    d_out = check_int("d_out", d_out, minimum=1)
    dtype = _check_dtype("dtype", dtype, tuple(_KERNEL_NAMES))
    cols = _COLUMNS_PER_LANE[dtype]
    if d_out % cols:
        raise ValueError(
            f"d_out must be a multiple of {cols} for {dtype} weights (vector loads), got {d_out}"
        )
    tile = 32 * cols
    return ((d_out + tile - 1) // tile, (batch_size + MAX_BATCH_PER_BLOCK - 1) // MAX_BATCH_PER_BLOCK), (
        _THREADS_PER_BLOCK,
    )


@cache
def _cuda_kernels() -> dict[str, Any]:
    import cupy  # noqa: PLC0415 - GPU only

    module = cupy.RawModule(code=CUDA_SOURCE, options=("-std=c++14",))
    return {dtype: module.get_function(name) for dtype, name in _KERNEL_NAMES.items()}


# --------------------------------------------------------------------------------------------------
# Operands
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Layer:
    """The weights of one linear layer, ``d_in x d_out`` (``Y = X W``), on one backend.

    ``weights`` is fp32 or fp16, or int8 with ``scales`` (one fp32 per output column):
    ``W[:, n] = weights[:, n] * scales[n]``.
    """

    weights: Any
    scales: Any = None

    def __post_init__(self) -> None:
        w = self.weights
        if not hasattr(w, "shape") or len(w.shape) != 2:
            raise ValueError(f"weights must be a 2-D array (d_in, d_out), got {_kind(w)}")
        if w.shape[0] < 1 or w.shape[1] < 1:
            raise ValueError(f"weights must have d_in >= 1 and d_out >= 1, got shape {tuple(w.shape)}")
        dtype = _DTYPE_NAME.get(np.dtype(w.dtype))
        if dtype is None:
            raise ValueError(f"weights dtype must be one of {list(WEIGHT_DTYPES)}, got {w.dtype}")
        if dtype == "int8":
            s = self.scales
            if s is None:
                raise ValueError("int8 weights need scales: one fp32 per output column")
            if array_module(s) is not array_module(w):
                raise TypeError("scales must live on the same backend as weights (both NumPy or both CuPy)")
            if tuple(s.shape) != (w.shape[1],) or np.dtype(s.dtype) != np.float32:
                raise ValueError(
                    f"scales must be fp32 of shape ({w.shape[1]},), got {s.dtype} of shape {tuple(s.shape)}"
                )
        elif self.scales is not None:
            raise ValueError(f"scales go with int8 weights only; these weights are {dtype}")

    @property
    def d_in(self) -> int:
        return int(self.weights.shape[0])

    @property
    def d_out(self) -> int:
        return int(self.weights.shape[1])

    @property
    def dtype(self) -> str:
        return _DTYPE_NAME[np.dtype(self.weights.dtype)]

    @property
    def nbytes(self) -> int:
        """Bytes a step reads: the weights, and the scales of int8."""
        return int(self.weights.nbytes) + (0 if self.scales is None else int(self.scales.nbytes))

    @property
    def xp(self) -> ModuleType:
        return array_module(self.weights)

    def copy(self) -> Layer:
        """The same numbers in fresh memory (timing rotates through copies so caches do not help)."""
        return Layer(self.weights.copy(), None if self.scales is None else self.scales.copy())


def quantize_int8(weights: Any) -> tuple[Any, Any]:
    """Symmetric per-output-column int8: ``(q, scales)`` with ``weights ~ q * scales``.

    ``scales[n] = max_k |weights[k, n]| / 127`` (1 for an all-zero column), ``q = round(w / scale)``,
    so every ``|q| <= 127`` and the error per weight is at most ``scales[n] / 2``.
    """
    xp = array_module(weights)
    w = xp.asarray(weights, dtype=xp.float32)
    if w.ndim != 2:
        raise ValueError(f"weights must be 2-D (d_in, d_out), got shape {tuple(w.shape)}")
    if not bool(xp.all(xp.isfinite(w))):
        raise ValueError("weights must be finite to quantize (found NaN or inf)")
    peak = xp.max(xp.abs(w), axis=0)
    scales = xp.where(peak > 0, peak / 127.0, 1.0).astype(xp.float32)
    q = xp.rint(w / scales).astype(xp.int8)  # |w / scale| <= 127 by construction: nothing is clipped
    return q, scales


def dequantize(layer: Layer) -> Any:
    """The layer's weights as fp32 (int8 times its scales): the reference the kernels must match."""
    _check_layer(layer)
    w = layer.weights.astype(layer.xp.float32)
    return w if layer.scales is None else w * layer.scales


def _where(where: Backend | None) -> Backend:
    if where is None:
        return backend()
    if not isinstance(where, Backend):
        raise TypeError(f"where must be a Backend, got {_kind(where)}")
    return where


def make_layer(
    d_in: int, d_out: int, dtype: str = "fp32", *, seed: int = 0, where: Backend | None = None
) -> Layer:
    """A layer of ``N(0, 1/d_in)`` weights stored as ``dtype``, drawn on the host and copied to ``where``."""
    d_in = check_int("d_in", d_in, minimum=1)
    d_out = check_int("d_out", d_out, minimum=1)
    dtype = _check_dtype("dtype", dtype, WEIGHT_DTYPES)
    w = stream(seed, "kernels/weights").standard_normal((d_in, d_out), dtype=np.float32)
    w *= np.float32(1.0 / math.sqrt(d_in))
    if dtype == "int8":
        q, scales = quantize_int8(w)
        return Layer(to_device(q, _where(where)), to_device(scales, _where(where)))
    return Layer(to_device(w.astype(_NP_DTYPE[dtype]), _where(where)))


def make_activations(
    batch_size: int, d_in: int, dtype: str = "fp32", *, seed: int = 0, where: Backend | None = None
) -> Any:
    """A batch of activation rows, ``(batch_size, d_in)``, standard normal."""
    batch_size = check_int("batch_size", batch_size, minimum=1)
    d_in = check_int("d_in", d_in, minimum=1)
    dtype = _check_dtype("dtype", dtype, ACTIVATION_DTYPES)
    x = stream(seed, "kernels/activations").standard_normal((batch_size, d_in), dtype=np.float32)
    return to_device(x.astype(_NP_DTYPE[dtype]), _where(where))


def make_kv_cache(
    batch_size: int,
    context_tokens: int,
    *,
    kv_heads: int = 8,
    q_heads: int = 32,
    head_dim: int = 128,
    dtype: str = "fp32",
    seed: int = 0,
    where: Backend | None = None,
) -> tuple[Any, Any, Any]:
    """``(q, k_cache, v_cache)`` of one decode step: ``q`` is ``(B, q_heads, head_dim)``, the caches
    ``(B, kv_heads, context_tokens, head_dim)``, all standard normal."""
    batch_size = check_int("batch_size", batch_size, minimum=1)
    context_tokens = check_int("context_tokens", context_tokens, minimum=1)
    kv_heads, q_heads, head_dim = _check_heads(kv_heads, q_heads, head_dim)
    dtype = _check_dtype("dtype", dtype, ACTIVATION_DTYPES)
    rng = stream(seed, "kernels/kv-cache")
    cache_shape = (batch_size, kv_heads, context_tokens, head_dim)
    arrays = [
        rng.standard_normal(shape, dtype=np.float32).astype(_NP_DTYPE[dtype], copy=False)
        for shape in ((batch_size, q_heads, head_dim), cache_shape, cache_shape)
    ]
    where = _where(where)
    q, k, v = (to_device(a, where) for a in arrays)
    return q, k, v


def _check_heads(kv_heads: object, q_heads: object, head_dim: object) -> tuple[int, int, int]:
    kv = check_int("kv_heads", kv_heads, minimum=1)
    q = check_int("q_heads", q_heads, minimum=1)
    d = check_int("head_dim", head_dim, minimum=1)
    if q % kv:
        raise ValueError(
            f"q_heads must be a multiple of kv_heads (grouped-query attention), got {q} and {kv}"
        )
    return kv, q, d


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


def _check_layer(layer: object) -> None:
    if not isinstance(layer, Layer):
        raise TypeError(f"layer must be a Layer, got {_kind(layer)}")


def _check_x(x: object, layer: Layer) -> ModuleType:
    _check_layer(layer)
    if not hasattr(x, "shape") or len(x.shape) != 2:
        raise ValueError(
            f"x must be a 2-D array (batch, d_in), got {_kind(x)} {getattr(x, 'shape', '')}"
        )
    xp = array_module(x)
    if xp is not layer.xp:
        raise TypeError(
            f"x and the layer must live on one backend, got {xp.__name__} and {layer.xp.__name__}"
        )
    if x.shape[0] < 1:
        raise ValueError(f"batch size (rows of x) must be >= 1, got {x.shape[0]}")
    if x.shape[1] != layer.d_in:
        raise ValueError(f"x has {x.shape[1]} columns but the layer's d_in is {layer.d_in}: shapes mismatch")
    if np.dtype(x.dtype) not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise ValueError(f"x must be fp32 or fp16, got {x.dtype}")
    return xp


def gemm_step(x: Any, layer: Layer) -> Any:
    """``Y = X W`` through the vendor GEMM (cuBLAS or the CPU's BLAS), in ``x``'s dtype.

    Weights must be fp32 or fp16 (int8 goes through ``tiled_matvec``, which dequantizes inside the
    kernel); mixed dtypes are promoted as the array library does.
    """
    xp = _check_x(x, layer)
    if layer.dtype == "int8":
        raise ValueError("gemm_step takes fp32 or fp16 weights; int8 weights run in tiled_matvec")
    return xp.matmul(x, layer.weights)


def tiled_matvec(x: Any, layer: Layer) -> Any:
    """``Y = X W`` (fp32 out) the weight-reuse way: each weight tile is read once for the whole batch.

    On CuPy arrays this launches the CUDA kernel of ``CUDA_SOURCE`` (fp16 or int8 weights; ``x`` is
    converted to fp16). On NumPy arrays the twin walks the same tiles: for each tile of
    ``TWIN_TILE_COLUMNS`` output columns it dequantizes the tile once (int8) and applies it to the
    batch ``MAX_BATCH_PER_BLOCK`` rows at a time, accumulating in fp32.
    """
    xp = _check_x(x, layer)
    if xp is np:
        return _tiled_matvec_numpy(x, layer)
    return _tiled_matvec_cupy(x, layer)


def _tiled_matvec_numpy(x: np.ndarray, layer: Layer) -> np.ndarray:
    batch, d_out = x.shape[0], layer.d_out
    x32 = x.astype(np.float32, copy=False)
    y = np.empty((batch, d_out), dtype=np.float32)
    weights = layer.weights
    buffer = np.empty((layer.d_in, min(TWIN_TILE_COLUMNS, d_out)), dtype=np.float32)
    for n0 in range(0, d_out, TWIN_TILE_COLUMNS):
        n1 = min(d_out, n0 + TWIN_TILE_COLUMNS)
        if weights.dtype == np.float32:
            tile = weights[:, n0:n1]
        else:  # read the int8 (or fp16) tile once, widen it to fp32 in a buffer that stays in cache
            tile = buffer[:, : n1 - n0]
            np.copyto(tile, weights[:, n0:n1], casting="unsafe")
        for b0 in range(0, batch, MAX_BATCH_PER_BLOCK):
            b1 = min(batch, b0 + MAX_BATCH_PER_BLOCK)
            y[b0:b1, n0:n1] = x32[b0:b1] @ tile
        if layer.scales is not None:
            y[:, n0:n1] *= layer.scales[n0:n1]  # per-column scales factor out of the sum over k
    return y


def _tiled_matvec_cupy(x: Any, layer: Layer) -> Any:
    import cupy  # noqa: PLC0415 - GPU only

    dtype = layer.dtype
    if dtype == "fp32":
        raise ValueError(
            "the CUDA kernel reads fp16 or int8 weights, got fp32: use gemm_step or fp16 weights"
        )
    batch = int(x.shape[0])
    grid, block = launch_config(batch, layer.d_out, dtype)
    x16 = cupy.ascontiguousarray(x, dtype=cupy.float16)
    weights = cupy.ascontiguousarray(layer.weights)
    y = cupy.empty((batch, layer.d_out), dtype=cupy.float32)
    dims = (np.int32(batch), np.int32(layer.d_in), np.int32(layer.d_out))
    if dtype == "int8":
        args = (x16, weights, cupy.ascontiguousarray(layer.scales), y, *dims)
    else:
        args = (x16, weights, y, *dims)
    _cuda_kernels()[dtype](grid, block, args)
    return y


def rowwise_matvec(x: Any, layer: Layer) -> Any:
    """``Y = X W`` one row at a time: each row reads all the weights again (no reuse across the batch)."""
    xp = _check_x(x, layer)
    if layer.dtype == "int8":
        raise ValueError("rowwise_matvec takes fp32 or fp16 weights, got int8")
    y = xp.empty((x.shape[0], layer.d_out), dtype=xp.result_type(x.dtype, layer.weights.dtype))
    for i in range(x.shape[0]):
        y[i] = x[i] @ layer.weights
    return y


def attention_step(q: Any, k_cache: Any, v_cache: Any) -> Any:
    """One decode step's attention: each request's query over its own cached keys and values.

    ``q`` is ``(B, q_heads, head_dim)``, the caches ``(B, kv_heads, T, head_dim)``; each group of
    ``q_heads / kv_heads`` query heads shares one KV head (grouped-query attention). Returns
    ``softmax(q K^T / sqrt(head_dim)) V`` as fp32 ``(B, q_heads, head_dim)``. The step reads
    ``2 B kv_heads T head_dim`` cached numbers: nothing here is shared across the batch.
    """
    xp = array_module(q)
    for name, a, ndim in (("q", q, 3), ("k_cache", k_cache, 4), ("v_cache", v_cache, 4)):
        if not hasattr(a, "shape") or len(a.shape) != ndim:
            raise ValueError(
                f"{name} must be a {ndim}-D array, got {_kind(a)} {getattr(a, 'shape', '')}"
            )
        if array_module(a) is not xp:
            raise TypeError("q, k_cache and v_cache must live on one backend")
    batch, q_heads, head_dim = q.shape
    if k_cache.shape != v_cache.shape:
        raise ValueError(
            f"k_cache and v_cache shapes differ: {tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    kb, kv_heads, context, kd = k_cache.shape
    if batch < 1:
        raise ValueError(f"batch size must be >= 1, got {batch}")
    if kb != batch or kd != head_dim:
        raise ValueError(
            f"k_cache shape {tuple(k_cache.shape)} does not match q shape {tuple(q.shape)}: "
            "need (batch, kv_heads, context, head_dim) with q's batch and head_dim"
        )
    if context < 1:
        raise ValueError(f"the KV cache must hold at least 1 token, got {context}")
    if q_heads % kv_heads:
        raise ValueError(f"q_heads ({q_heads}) must be a multiple of kv_heads ({kv_heads})")
    groups = q_heads // kv_heads
    qg = q.reshape(batch, kv_heads, groups, head_dim).astype(k_cache.dtype, copy=False)
    scores = xp.matmul(qg, k_cache.swapaxes(-1, -2)).astype(xp.float32)  # (B, kv, groups, T)
    scores *= np.float32(1.0 / math.sqrt(head_dim))
    scores -= scores.max(axis=-1, keepdims=True)
    weights = xp.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    out = xp.matmul(weights.astype(v_cache.dtype, copy=False), v_cache)  # (B, kv, groups, head_dim)
    return out.reshape(batch, q_heads, head_dim).astype(xp.float32, copy=False)


# --------------------------------------------------------------------------------------------------
# The shape of a step, and its traffic
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepConfig:
    """One measured decode step: a ``d_in x d_out`` layer, plus attention over ``context_tokens``.

    A stand-in for one transformer layer: one weight matrix (e.g. the MLP's up-projection of a
    d_model 4096 model is 4096 x 16384) and, when ``context_tokens > 0``, the attention of each
    request over a KV cache of that many tokens (``kv_heads x head_dim`` per token for K and for V).
    ``dtype`` is the weights' storage, ``activation_dtype`` that of activations and KV cache.
    ``d_out`` must be a multiple of 4 (the CUDA kernel's vector loads).
    """

    d_in: int = 1024
    d_out: int = 4096
    dtype: str = "fp32"
    activation_dtype: str = "fp32"
    context_tokens: int = 0
    kv_heads: int = 8
    q_heads: int = 32
    head_dim: int = 128

    def __post_init__(self) -> None:
        object.__setattr__(self, "d_in", check_int("d_in", self.d_in, minimum=1))
        object.__setattr__(self, "d_out", check_int("d_out", self.d_out, minimum=4))
        if self.d_out % 4:
            raise ValueError(f"d_out must be a multiple of 4 (the kernel's vector loads), got {self.d_out}")
        _check_dtype("dtype", self.dtype, WEIGHT_DTYPES)
        _check_dtype("activation_dtype", self.activation_dtype, ACTIVATION_DTYPES)
        object.__setattr__(
            self, "context_tokens", check_int("context_tokens", self.context_tokens, minimum=0)
        )
        _check_heads(self.kv_heads, self.q_heads, self.head_dim)

    @classmethod
    def for_backend(cls, where: Backend | None = None, **changes: Any) -> StepConfig:
        """The default step of a backend: 4096 -> 16384 fp16 on a GPU, 1024 -> 4096 fp32 on a CPU."""
        if _where(where).is_gpu:
            base = cls(d_in=4096, d_out=16384, dtype="fp16", activation_dtype="fp16")
        else:
            base = cls()
        return replace(base, **changes)

    @property
    def weight_bytes(self) -> int:
        scales = 4 * self.d_out if self.dtype == "int8" else 0
        return self.d_in * self.d_out * _DTYPE_BYTES[self.dtype] + scales

    @property
    def kv_bytes_per_request(self) -> int:
        """KV-cache bytes one request's attention reads in one step."""
        return 2 * self.context_tokens * self.kv_heads * self.head_dim * _DTYPE_BYTES[self.activation_dtype]

    def traffic(self, kernel: str) -> StepTraffic:
        """Bytes and FLOPs of one step of ``kernel`` (``KERNELS``) as functions of the batch size.

        Weights count once per step for ``gemm`` and ``tiled`` and once per request for ``rowwise``;
        activations in and out and the KV cache count per request. FLOPs: ``2 d_in d_out`` per request
        for the layer, ``4 context q_heads head_dim`` for attention.
        """
        kernel = check_in("kernel", kernel, KERNELS)
        act = _DTYPE_BYTES[self.activation_dtype]
        fixed, per_item, flops = 0.0, 0.0, 0.0
        if kernel != "attention":
            out_bytes = 4 if kernel == "tiled" else act
            per_item += self.d_in * act + self.d_out * out_bytes
            flops += 2.0 * self.d_in * self.d_out
            if kernel == "rowwise":
                per_item += self.weight_bytes
            else:
                fixed += self.weight_bytes
        elif self.context_tokens < 1:
            raise ValueError("kernel 'attention' needs context_tokens >= 1, got 0")
        if self.context_tokens:
            per_item += self.kv_bytes_per_request + self.q_heads * self.head_dim * (act + 4)
            flops += 4.0 * self.context_tokens * self.q_heads * self.head_dim
        return StepTraffic(bytes_fixed=fixed, bytes_per_item=per_item, flops_per_item=flops)


# --------------------------------------------------------------------------------------------------
# Timing and peaks
# --------------------------------------------------------------------------------------------------


def time_calls_s(
    fn: Callable[[int], object], *, repeats: int = 20, warmup: int = 3, where: Backend | None = None
) -> np.ndarray:
    """Seconds of each of ``repeats`` calls ``fn(i)`` after ``warmup`` untimed ones.

    ``i`` counts the calls, so ``fn`` can rotate through copies of its inputs. On a GPU this is
    ``cupyx.profiler.benchmark`` (device time between CUDA events); on a CPU, ``perf_counter`` around
    each call.
    """
    repeats = check_int("repeats", repeats, minimum=1)
    warmup = check_int("warmup", warmup, minimum=0)
    where = _where(where)
    calls = iter(range(2**62))
    if where.is_gpu:
        from cupyx.profiler import benchmark  # noqa: PLC0415 - GPU only

        result = benchmark(lambda: fn(next(calls)), n_repeat=repeats, n_warmup=warmup)
        return np.asarray(result.gpu_times, dtype=float).reshape(-1, repeats)[0]
    for _ in range(warmup):
        fn(next(calls))
    out = np.empty(repeats)
    for r in range(repeats):
        i = next(calls)
        start = time.perf_counter()
        fn(i)
        out[r] = time.perf_counter() - start
    return out


@dataclass(frozen=True)
class Peaks:
    """A device's peak memory bandwidth and FLOP rate, and where the figures come from."""

    bandwidth_bytes_per_s: float
    flops_per_s: float
    source: str
    measured_at: str = ""

    def __post_init__(self) -> None:
        for name in ("bandwidth_bytes_per_s", "flops_per_s"):
            object.__setattr__(self, name, check_positive(name, getattr(self, name)))
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"source must say where the peaks come from, got {self.source!r}")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_name(where: Backend) -> str:
    if where.is_gpu:
        return where.device.removeprefix("GPU: ")
    return f"{_cpu_name()}, {_cpu_threads()} threads"


def _device_memory_bytes(where: Backend) -> int:
    if where.is_gpu:
        return int(where.xp.cuda.Device().mem_info[1])
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def measure_peaks(
    where: Backend | None = None,
    *,
    bandwidth_bytes: int | None = None,
    matmul_size: int | None = None,
    repeats: int = 10,
) -> Peaks:
    """Measure the device's bandwidth and FLOP rate (best of ``repeats``).

    Bandwidth: on a CPU, a sum over ``bandwidth_bytes`` of fp32 (256 MiB by default, well past the
    caches) split across the CPU's threads; on a GPU, a copy of ``bandwidth_bytes`` (2 GiB; read and
    write both count). FLOP/s: a square matmul of ``matmul_size`` (2048 fp32 on a CPU, 8192 fp16 on
    a GPU). These are what the vendor libraries reach, an honest stand-in for the unpublished peaks
    of a CPU; a GPU has datasheet peaks (``device_peaks``).
    """
    where = _where(where)
    xp = where.xp
    gpu = where.is_gpu
    bandwidth_bytes = check_int(
        "bandwidth_bytes",
        (2 << 30 if gpu else 256 << 20) if bandwidth_bytes is None else bandwidth_bytes,
        minimum=4,
    )
    n = check_int("matmul_size", (8192 if gpu else 2048) if matmul_size is None else matmul_size, minimum=1)
    repeats = check_int("repeats", repeats, minimum=1)
    dtype = xp.float16 if gpu else xp.float32
    data = xp.ones(bandwidth_bytes // 4, dtype=xp.float32)
    if gpu:
        target = xp.empty_like(data)
        bw_s = time_calls_s(lambda _: xp.copyto(target, data), repeats=repeats, warmup=1, where=where)
        moved = 2 * data.nbytes
        how = f"copy of {data.nbytes / 2**20:.0f} MiB"
    else:
        threads = _cpu_threads()
        chunks = np.array_split(data, threads)
        with ThreadPoolExecutor(threads) as pool:  # NumPy releases the GIL in the sum
            bw_s = time_calls_s(
                lambda _: list(pool.map(np.sum, chunks)), repeats=repeats, warmup=1, where=where
            )
        moved = data.nbytes
        how = f"sum over {data.nbytes / 2**20:.0f} MiB on {threads} threads"
    a = xp.ones((n, n), dtype=dtype)
    b = xp.ones((n, n), dtype=dtype)
    mm_s = time_calls_s(lambda _: xp.matmul(a, b), repeats=repeats, warmup=1, where=where)
    name = "fp16" if gpu else "fp32"
    return Peaks(
        bandwidth_bytes_per_s=moved / float(np.min(bw_s)),
        flops_per_s=2.0 * n**3 / float(np.min(mm_s)),
        source=f"measured on {_device_name(where)}: {how}; {name} matmul {n}^3",
        measured_at=_now(),
    )


# Device names (as CUDA reports them) -> rows of data/hardware.csv with the same memory and clocks.
_DATASHEET_ROWS = (
    (r"\bH100\b.*(SXM|HBM3)", "H100 SXM"),
    (r"\bH200\b", "H200"),
    (r"\bA100\b.*80GB", "A100 80GB SXM"),
    (r"\bL4\b", "L4"),
)


def _datasheet_row(device: str) -> str | None:
    known = set(hardware_names())
    for pattern, row in _DATASHEET_ROWS:
        if re.search(pattern, device) and row in known:
            return row
    return None


@cache
def device_peaks(where: Backend | None = None) -> Peaks:
    """The peaks that measured fractions are taken of (measured once per process when needed).

    A GPU named in ``data/hardware.csv`` gets its datasheet figures (dense BF16/FP16 tensor-core
    FLOP/s); any other device, every CPU included, gets ``measure_peaks``.
    """
    where = _where(where)
    row = _datasheet_row(where.device) if where.is_gpu else None
    if row is None:
        return measure_peaks(where)
    hw = load_hardware(row)
    return Peaks(
        bandwidth_bytes_per_s=hw.memory_bandwidth_bytes_per_s,
        flops_per_s=hw.peak_flops_per_s,
        source=f"datasheet: {hw.name} ({hw.source})",
        measured_at=hw.source_date,
    )


def library_versions(where: Backend | None = None) -> dict[str, str]:
    """Versions behind a measurement: Python, NumPy and its BLAS, CuPy (empty without a GPU)."""
    where = _where(where)
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas_name = f"{blas.get('name', '')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 - the BLAS name is informative only
        blas_name = "unknown"
    cupy_version = ""
    if where.is_gpu:
        cupy_version = str(where.xp.__version__)
        blas_name = f"cuBLAS (CUDA runtime {where.xp.cuda.runtime.runtimeGetVersion()})"
    return {
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "cupy_version": cupy_version,
        "blas": blas_name,
    }


# --------------------------------------------------------------------------------------------------
# Measured curves
# --------------------------------------------------------------------------------------------------

#: Columns of ``measure_curve``'s table and of the shipped ``data/kernel_curves_*.csv``.
CURVE_COLUMNS: dict[str, tuple[str, str]] = {
    "kernel": ("object", "gemm, tiled, rowwise or attention (KERNELS)"),
    "backend": ("object", "numpy or cupy"),
    "device": ("object", "the CPU model and its threads, or the GPU's name"),
    "dtype": ("object", "weight storage: fp32, fp16 or int8"),
    "activation_dtype": ("object", "activations and KV cache: fp32 or fp16"),
    "d_in": ("int64", "layer input width"),
    "d_out": ("int64", "layer output width"),
    "context_tokens": ("int64", "KV-cache tokens each request's attention reads (0: no attention)"),
    "kv_heads": ("int64", "KV heads per token"),
    "q_heads": ("int64", "query heads"),
    "head_dim": ("int64", "numbers per head"),
    "batch_size": ("int64", "requests in the step"),
    "seconds": ("float64", "best (smallest) time of one step over the repeats"),
    "seconds_median": ("float64", "median time of one step"),
    "repeats": ("int64", "timed calls"),
    "bytes_moved": ("float64", "bytes the step must move (StepConfig.traffic)"),
    "flops": ("float64", "FLOPs the step does"),
    "tokens_per_s": ("float64", "batch_size / seconds: one token per request per step"),
    "gb_per_s": ("float64", "achieved bandwidth, 1e9 bytes per second"),
    "tflop_per_s": ("float64", "achieved compute, 1e12 FLOP per second"),
    "bandwidth_fraction": ("float64", "achieved bandwidth / peak bandwidth"),
    "compute_fraction": ("float64", "achieved FLOP/s / peak FLOP/s"),
    "peak_bandwidth_bytes_per_s": ("float64", "the peak the fraction is of"),
    "peak_flops_per_s": ("float64", "the peak the fraction is of"),
    "peak_source": ("object", "datasheet row, or how and where the peaks were measured"),
    "overhead_s": ("float64", "fixed cost of one call, measured on a tiny step (measure_overhead_s)"),
    "device_memory_bytes": ("int64", "the device's memory (RAM on a CPU)"),
    "python_version": ("object", ""),
    "numpy_version": ("object", ""),
    "cupy_version": ("object", "empty on a CPU"),
    "blas": ("object", "the BLAS behind the vendor GEMM"),
    "measured_at": ("object", "UTC time the curve's measurement ended, ISO 8601"),
}


def _copies(stream_bytes: int, copy_bytes: int) -> int:
    # Enough copies that one pass over them outgrows the caches, as a model's many layers do.
    return int(min(256, max(1, math.ceil(stream_bytes / max(copy_bytes, 1)))))


def _step_function(
    kernel: str,
    config: StepConfig,
    batch_size: int,
    layers: list[Layer] | None,
    rotation: Iterator[int],
    where: Backend,
    stream_bytes: int,
    seed: int,
) -> Callable[[int], object]:
    """A call that runs one step on the next copy of its operands.

    ``rotation`` counts calls across every batch size and pass of a curve, so the weight copies are
    visited in one long cycle: a copy comes back only after all the others have been read.
    """
    act = config.activation_dtype
    x = None if layers is None else make_activations(batch_size, config.d_in, act, seed=seed, where=where)
    caches = None
    if config.context_tokens:
        kv = make_kv_cache(
            batch_size,
            config.context_tokens,
            kv_heads=config.kv_heads,
            q_heads=config.q_heads,
            head_dim=config.head_dim,
            dtype=act,
            seed=seed,
            where=where,
        )
        # Copy k of the cache comes back after `copies` steps, each reading its weights and its cache.
        layer_bytes = 0 if layers is None else layers[0].nbytes
        copies = _copies(stream_bytes, layer_bytes + batch_size * config.kv_bytes_per_request)
        caches = [kv] + [tuple(a.copy() for a in kv) for _ in range(copies - 1)]
    matvec = {"gemm": gemm_step, "tiled": tiled_matvec, "rowwise": rowwise_matvec}.get(kernel)

    def step(_: int) -> object:
        i = next(rotation)
        out = None
        if layers is not None:
            out = matvec(x, layers[i % len(layers)])
        if caches is not None:
            out = attention_step(*caches[i % len(caches)])
        return out

    return step


def measure_curve(
    kernel: str,
    batch_sizes: Sequence[int],
    config: StepConfig | None = None,
    *,
    repeats: int = 20,
    warmup: int = 3,
    passes: int = 1,
    stream_bytes: int | None = None,
    peaks: Peaks | None = None,
    seed: int = 0,
    where: Backend | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Time one decode step of ``kernel`` at each batch size: a table with ``CURVE_COLUMNS``.

    ``config`` defaults to ``StepConfig.for_backend``. Operands are copied until one pass over the
    copies holds ``stream_bytes`` (512 MiB on a CPU, 2 GiB on a GPU: past the last-level cache)
    and each call takes the next copy, so the weights come from memory as in a real model whose
    layers never fit in cache. Each of ``passes`` sweeps over the batch sizes times ``repeats`` calls
    per batch size after ``warmup``; several passes spread each batch size's calls over the run, so
    a burst of load from other processes cannot spoil one batch size alone. ``seconds`` is the best
    call (the device's capability: load only adds time), ``seconds_median`` the typical one.
    ``peaks`` defaults to ``device_peaks`` (measured once per process on a CPU).
    """
    kernel = check_in("kernel", kernel, KERNELS)
    where = _where(where)
    config = StepConfig.for_backend(where) if config is None else config
    if not isinstance(config, StepConfig):
        raise TypeError(f"config must be a StepConfig, got {_kind(config)}")
    traffic = config.traffic(kernel)  # refuses attention without context
    if kernel in ("gemm", "rowwise") and config.dtype == "int8":
        raise ValueError(f"kernel {kernel!r} takes fp32 or fp16 weights; int8 weights run in kernel 'tiled'")
    if kernel == "tiled" and where.is_gpu and config.dtype == "fp32":
        raise ValueError("kernel 'tiled' on a GPU reads fp16 or int8 weights, got fp32")
    if isinstance(batch_sizes, (int, np.integer)) or not len(batch_sizes):
        raise ValueError(f"batch_sizes must be a non-empty sequence of integers >= 1, got {batch_sizes!r}")
    sizes = [check_int("batch_size", b, minimum=1) for b in batch_sizes]
    passes = check_int("passes", passes, minimum=1)
    if stream_bytes is None:
        stream_bytes = (2 << 30) if where.is_gpu else (512 << 20)
    stream_bytes = check_int("stream_bytes", stream_bytes, minimum=0)
    peaks = device_peaks(where) if peaks is None else peaks
    if not isinstance(peaks, Peaks):
        raise TypeError(f"peaks must be a Peaks, got {_kind(peaks)}")

    layers = None
    if kernel != "attention":  # the weights do not depend on the batch: one set of copies for all
        layer = make_layer(config.d_in, config.d_out, config.dtype, seed=seed, where=where)
        layers = [layer] + [layer.copy() for _ in range(_copies(stream_bytes, layer.nbytes) - 1)]
    rotation = itertools.count()
    seconds: dict[int, list[np.ndarray]] = {b: [] for b in sizes}
    work: Any = [(p, b) for p in range(passes) for b in sizes]
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415 - only for progress bars

        work = tqdm(work, desc=f"{kernel} {config.dtype}", leave=False)
    for _, batch in work:
        step = _step_function(kernel, config, batch, layers, rotation, where, stream_bytes, seed)
        seconds[batch].append(time_calls_s(step, repeats=repeats, warmup=warmup, where=where))
        del step  # free this batch's KV copies before the next

    common = {
        "kernel": kernel,
        "backend": where.name,
        "device": _device_name(where),
        "dtype": config.dtype,
        "activation_dtype": config.activation_dtype,
        "d_in": config.d_in,
        "d_out": config.d_out,
        "context_tokens": config.context_tokens,
        "kv_heads": config.kv_heads,
        "q_heads": config.q_heads,
        "head_dim": config.head_dim,
        "overhead_s": measure_overhead_s(kernel, config, where=where),
        "device_memory_bytes": _device_memory_bytes(where),
        **library_versions(where),
        "measured_at": _now(),
    }
    rows = []
    for batch in sizes:
        times = np.concatenate(seconds[batch])
        best = float(np.min(times))
        rows.append(
            {
                **common,
                "batch_size": batch,
                "seconds": best,
                "seconds_median": float(np.median(times)),
                "repeats": int(times.size),
                "bytes_moved": float(traffic.bytes_moved(batch)),
                "flops": float(traffic.flops(batch)),
                "tokens_per_s": batch / best,
            }
        )
    return with_peaks(pd.DataFrame(rows), peaks)


def with_peaks(curves: pd.DataFrame, peaks: Peaks) -> pd.DataFrame:
    """``curves`` with its rates and fractions recomputed against ``peaks`` (e.g. peaks measured
    again after the run, on a quieter machine)."""
    if not isinstance(peaks, Peaks):
        raise TypeError(f"peaks must be a Peaks, got {_kind(peaks)}")
    out = curves.copy()
    out["gb_per_s"] = out["bytes_moved"] / out["seconds"] / 1e9
    out["tflop_per_s"] = out["flops"] / out["seconds"] / 1e12
    out["bandwidth_fraction"] = out["bytes_moved"] / out["seconds"] / peaks.bandwidth_bytes_per_s
    out["compute_fraction"] = out["flops"] / out["seconds"] / peaks.flops_per_s
    out["peak_bandwidth_bytes_per_s"] = peaks.bandwidth_bytes_per_s
    out["peak_flops_per_s"] = peaks.flops_per_s
    out["peak_source"] = peaks.source
    return out.reindex(columns=list(CURVE_COLUMNS))


def measure_overhead_s(
    kernel: str = "gemm",
    config: StepConfig | None = None,
    *,
    where: Backend | None = None,
    repeats: int = 100,
) -> float:
    """The fixed cost of one step of ``kernel``: its best time on a tiny step (batch 1, 8 x 8 weights).

    Dispatch through Python and the array library, and on a GPU the kernel launches: the roofline's
    ``overhead``, measured rather than fitted. ``config`` says which dtypes and whether the step has
    attention (then over one token of one 8-wide head); only its shape is shrunk.
    """
    kernel = check_in("kernel", kernel, KERNELS)
    where = _where(where)
    config = StepConfig.for_backend(where) if config is None else config
    tiny = replace(
        config,
        d_in=8,
        d_out=8,
        context_tokens=min(config.context_tokens, 1),
        kv_heads=1,
        q_heads=1,
        head_dim=8,
    )
    tiny.traffic(kernel)  # the same refusals as measure_curve
    layers = None if kernel == "attention" else [make_layer(8, 8, tiny.dtype, where=where)]
    step = _step_function(kernel, tiny, 1, layers, itertools.count(), where, 0, 0)
    return float(np.min(time_calls_s(step, repeats=repeats, warmup=10, where=where)))


def load_kernel_curves(filename: str = "kernel_curves_cpu.csv") -> pd.DataFrame:
    """A measured curve table shipped in ``data/`` (written by ``benchmarks/bench_kernels.py``)."""
    if not isinstance(filename, str) or "/" in filename or not filename.endswith(".csv"):
        raise ValueError(f"filename must be the name of a .csv in scaleplay/data, got {filename!r}")
    path = resources.files("scaleplay").joinpath("data", filename)
    if not path.is_file():
        shipped = sorted(p.name for p in resources.files("scaleplay").joinpath("data").iterdir())
        raise ValueError(f"no {filename!r} in scaleplay/data; it holds {shipped}")
    text_columns = [c for c, (dtype, _) in CURVE_COLUMNS.items() if dtype == "object"]
    with path.open(encoding="utf-8") as f:
        # Text stays text: an empty cupy_version (a CPU run) is "", not NaN.
        frame = pd.read_csv(f, dtype={c: str for c in text_columns}, keep_default_na=False)
    check_columns(frame, CURVE_COLUMNS, filename)
    return frame


_CONFIG_COLUMNS = ("d_in", "d_out", "dtype", "activation_dtype", "kv_heads", "q_heads", "head_dim")


def _select(curves: pd.DataFrame, kernel: str, dtype: str | None, context_tokens: int) -> pd.DataFrame:
    check_columns(curves, CURVE_COLUMNS, "curves")
    kernel = check_in("kernel", kernel, KERNELS)
    context_tokens = check_int("context_tokens", context_tokens, minimum=0)
    rows = curves[(curves["kernel"] == kernel) & (curves["context_tokens"] == context_tokens)]
    if dtype is not None:
        rows = rows[rows["dtype"] == _check_dtype("dtype", dtype, WEIGHT_DTYPES)]
    if rows.empty:
        raise ValueError(
            f"curves hold no rows for kernel {kernel!r}, dtype {dtype!r}, context_tokens {context_tokens}"
        )
    configs = rows[list(_CONFIG_COLUMNS)].drop_duplicates()
    if len(configs) > 1 or rows["batch_size"].duplicated().any():
        raise ValueError(
            f"curves hold more than one step for kernel {kernel!r} at context {context_tokens}: "
            f"pass dtype, or select the rows first ({configs.to_dict('records')})"
        )
    return rows.sort_values("batch_size")


def fit_curve(
    curves: pd.DataFrame,
    kernel: str = "gemm",
    *,
    dtype: str | None = None,
    context_tokens: int = 0,
    overhead_s: float | str | None = "measured",
) -> RooflineFit:
    """Fit the roofline to one measured curve of ``curves`` (rows of ``kernel``/``dtype``/context).

    ``overhead_s``: ``"measured"`` (the default) fixes the overhead at the curve's ``overhead_s``
    column, the cost of a tiny step; ``None`` fits it with the bandwidth and the peak; a number fixes
    it there. Fitting it is the better choice when the kernel follows the roofline closely; where it
    strays (a CPU BLAS packs the weights at small batches), a free overhead soaks up the misfit and
    the fit can call every step compute-bound.
    """
    rows = _select(curves, kernel, dtype, context_tokens)
    if isinstance(overhead_s, str):
        check_in("overhead_s", overhead_s, ("measured",))
        overhead_s = float(rows["overhead_s"].min())
    first = rows.iloc[0]
    config = StepConfig(
        **{
            c: (int(first[c]) if c not in ("dtype", "activation_dtype") else str(first[c]))
            for c in _CONFIG_COLUMNS
        },
        context_tokens=context_tokens,
    )
    return fit_roofline(
        rows["batch_size"].to_numpy(float),
        rows["seconds"].to_numpy(float),
        config.traffic(kernel),
        overhead_s=overhead_s,
    )


def measured_hardware(curves: pd.DataFrame) -> Hardware:
    """The device of a measured table as a ``profiles.Hardware`` (its recorded peaks, source and date).

    For a CPU this is "this CPU, measured": the figures ``measure_peaks`` took when the curves were
    measured, usable with ``RooflineServiceTime`` like a datasheet row.
    """
    check_columns(curves, CURVE_COLUMNS, "curves")
    if curves.empty:
        raise ValueError("curves is empty")
    first = curves.iloc[0]
    return Hardware(
        name=f"{first['device']} (measured)",
        memory_bandwidth_bytes_per_s=float(first["peak_bandwidth_bytes_per_s"]),
        peak_flops_per_s=float(first["peak_flops_per_s"]),
        memory_bytes=float(first["device_memory_bytes"]),
        source=str(first["peak_source"]),
        source_date=str(first["measured_at"])[:10],
    )
