"""Kernels of a decode step: twins against references, the CUDA source emulated, one measured curve.

Tolerances. A dot product of length K accumulated in fp32 is within ``K u sum_k |x_k w_k|`` of the
exact one (u = 2^-24, the fp32 unit roundoff; Higham, Accuracy and Stability, section 3.1), whatever
the order of the sums. The kernels are held to twice that bound, element by element, against a
float64 reference built from the very same inputs (the int8 kernels against the dequantized
weights). Results stored in fp16 get another 2^-11 of their magnitude. Attention, whose softmax runs
in fp32, is compared with rtol 1e-4.
"""

from __future__ import annotations

import doctest
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaleplay import backend as backend_module
from scaleplay import kernels
from scaleplay.backend import Backend, array_module, backend, gpu_backend, to_device, to_host
from scaleplay.kernels import (
    CURVE_COLUMNS,
    Layer,
    Peaks,
    StepConfig,
    attention_step,
    dequantize,
    fit_curve,
    gemm_step,
    launch_config,
    load_kernel_curves,
    make_activations,
    make_kv_cache,
    make_layer,
    measure_curve,
    measure_peaks,
    measured_hardware,
    quantize_int8,
    rowwise_matvec,
    tiled_matvec,
    time_calls_s,
    with_peaks,
)
from scaleplay.profiles import Hardware
from scaleplay.rng import stream

CPU = Backend("numpy", np, "CPU")
PEAKS = Peaks(bandwidth_bytes_per_s=20e9, flops_per_s=200e9, source="test figures")
U32 = 2.0**-24


def reference(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact-enough ``x @ w`` and the error bound ``2 K u |x| @ |w|`` of an fp32 accumulation."""
    x64, w64 = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    return x64 @ w64, 2.0 * x64.shape[1] * U32 * (np.abs(x64) @ np.abs(w64))


def assert_within(y: object, exact: np.ndarray, bound: np.ndarray) -> None:
    err = np.abs(to_host(y).astype(np.float64) - exact)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"


def test_doctests() -> None:
    assert doctest.testmod(kernels).failed == 0


# ---- backend -------------------------------------------------------------------------------------


@pytest.fixture
def fresh_backend() -> object:
    backend.cache_clear()
    gpu_backend.cache_clear()
    yield
    backend.cache_clear()
    gpu_backend.cache_clear()


def test_environment_variable_forces_numpy(fresh_backend: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backend_module.FORCE_NUMPY_ENV, "1")
    chosen = backend()
    assert chosen.name == "numpy" and chosen.xp is np and not chosen.is_gpu
    assert "forced" in chosen.device


def test_no_cupy_means_numpy(fresh_backend: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(backend_module.FORCE_NUMPY_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now raises ImportError
    assert gpu_backend() is None
    assert backend() == Backend("numpy", np, "CPU")


def test_arrays_stay_numpy_on_the_cpu() -> None:
    a = np.arange(3.0)
    assert array_module(a) is np
    assert to_device(a, CPU) is a
    assert isinstance(to_host([1, 2]), np.ndarray)


# ---- int8 quantization ---------------------------------------------------------------------------


def test_int8_is_per_column_and_within_half_a_step() -> None:
    w = stream(1, "test-weights").standard_normal((64, 40)).astype(np.float32)
    w[:, 3] = 0.0  # an all-zero column must not divide by zero
    w[:, 5] *= 1000.0  # a large column gets its own scale
    q, scales = quantize_int8(w)
    assert q.dtype == np.int8 and scales.dtype == np.float32 and scales.shape == (40,)
    assert np.abs(q.astype(int)).max() <= 127
    nonzero = np.abs(w).max(axis=0) > 0
    assert np.all(np.abs(q.astype(int)).max(axis=0)[nonzero] == 127)
    assert np.all(q[:, 3] == 0)
    assert np.all(np.abs(q * scales - w) <= scales / 2 * (1 + 1e-5))


def test_quantize_refuses_bad_weights() -> None:
    with pytest.raises(ValueError, match="finite"):
        quantize_int8(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="2-D"):
        quantize_int8(np.ones(3))


# ---- kernels against references (NumPy twins) ----------------------------------------------------

SHAPES = [(1, 64, 96), (15, 33, 260), (16, 128, 512), (17, 96, 4), (40, 1024, 300)]


@pytest.mark.parametrize(("batch", "d_in", "d_out"), SHAPES)
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_fp_kernels_match_the_reference(batch: int, d_in: int, d_out: int, dtype: str) -> None:
    layer = make_layer(d_in, d_out, dtype, seed=batch, where=CPU)
    x = make_activations(batch, d_in, seed=batch, where=CPU)
    exact, bound = reference(x, layer.weights)
    for kernel in (tiled_matvec, gemm_step, rowwise_matvec):
        y = kernel(x, layer)
        assert y.shape == (batch, d_out)
        assert_within(y, exact, bound)


@pytest.mark.parametrize(("batch", "d_in", "d_out"), SHAPES)
def test_int8_kernel_matches_the_dequantized_reference(batch: int, d_in: int, d_out: int) -> None:
    layer = make_layer(d_in, d_out, "int8", seed=batch, where=CPU)
    x = make_activations(batch, d_in, seed=batch, where=CPU)
    y = tiled_matvec(x, layer)
    assert y.dtype == np.float32
    exact, bound = reference(x, dequantize(layer))
    assert_within(y, exact, bound)
    # ... and the quantization itself costs at most half a step per weight.
    w = make_layer(d_in, d_out, "fp32", seed=batch, where=CPU).weights
    true, _ = reference(x, w)
    half_step = np.abs(x.astype(np.float64)).sum(axis=1, keepdims=True) * layer.scales / 2
    assert_within(y, true, bound + half_step)


def test_int8_halves_the_bytes_of_fp16() -> None:
    fp16 = make_layer(4096, 1024, "fp16", where=CPU)
    int8 = make_layer(4096, 1024, "int8", where=CPU)
    assert int8.nbytes == fp16.nbytes / 2 + 4 * 1024  # plus one fp32 scale per column
    assert StepConfig(4096, 1024, "int8").weight_bytes == int8.nbytes


def test_attention_matches_the_reference() -> None:
    q, k, v = make_kv_cache(3, 37, kv_heads=2, q_heads=6, head_dim=16, seed=4, where=CPU)
    out = attention_step(q, k, v)
    assert out.shape == (3, 6, 16) and out.dtype == np.float32
    expected = np.empty(out.shape)
    for b in range(3):
        for h in range(6):
            g = h // 3  # query heads 0-2 read KV head 0, heads 3-5 KV head 1
            scores = k[b, g].astype(np.float64) @ q[b, h] / math.sqrt(16)
            p = np.exp(scores - scores.max())
            expected[b, h] = (p / p.sum()) @ v[b, g]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)


def test_kv_bytes_grow_with_context_and_are_not_shared() -> None:
    base = StepConfig(d_in=1024, d_out=4096)
    short, long = (
        StepConfig(context_tokens=512).traffic("gemm"),
        StepConfig(context_tokens=2048).traffic("gemm"),
    )
    weights_only = base.traffic("gemm")
    assert short.bytes_fixed == long.bytes_fixed == weights_only.bytes_fixed == 1024 * 4096 * 4
    kv_per_token = 2 * 8 * 128 * 4  # K and V, 8 heads of 128 fp32
    assert short.bytes_per_item - weights_only.bytes_per_item == pytest.approx(
        512 * kv_per_token + 32 * 128 * 8
    )
    assert long.bytes_per_item - short.bytes_per_item == 1536 * kv_per_token
    # The ridge moves out as the context grows, and at long contexts it is gone.
    bw, peak = 25e9, 3e11
    ridges = [c.ridge_batch_size(bw, peak) for c in (weights_only, short, long)]
    assert ridges[0] < ridges[1] and ridges[2] == math.inf
    # Rowwise reads the weights per request: nothing is fixed.
    assert base.traffic("rowwise").bytes_fixed == 0


# ---- bad input -----------------------------------------------------------------------------------


def test_bad_input_gets_a_clear_error() -> None:
    layer = make_layer(32, 64, where=CPU)
    with pytest.raises(ValueError, match=r"batch size \(rows of x\) must be >= 1, got 0"):
        gemm_step(np.ones((0, 32), np.float32), layer)
    with pytest.raises(ValueError, match="x has 31 columns but the layer's d_in is 32: shapes mismatch"):
        tiled_matvec(np.ones((2, 31), np.float32), layer)
    with pytest.raises(ValueError, match="x must be a 2-D array"):
        tiled_matvec(np.ones(32, np.float32), layer)
    with pytest.raises(ValueError, match="x must be fp32 or fp16, got int64"):
        gemm_step(np.ones((2, 32), np.int64), layer)
    with pytest.raises(ValueError, match="dtype must be one of 'fp32', 'fp16', 'int8'; got 'int4'"):
        make_layer(8, 8, "int4")
    with pytest.raises(ValueError, match="no bfloat16 arrays"):
        make_layer(8, 8, "bf16")
    with pytest.raises(ValueError, match="d_in must be >= 1, got 0"):
        make_layer(0, 8)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        make_activations(0, 8)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        make_activations(1.5, 8)  # type: ignore[arg-type]
    int8 = make_layer(32, 64, "int8", where=CPU)
    with pytest.raises(ValueError, match="int8 weights run in tiled_matvec"):
        gemm_step(np.ones((2, 32), np.float32), int8)
    with pytest.raises(ValueError, match="int8 weights need scales"):
        Layer(int8.weights)
    with pytest.raises(ValueError, match="scales go with int8 weights only"):
        Layer(layer.weights, int8.scales)
    with pytest.raises(ValueError, match=r"scales must be fp32 of shape \(64,\)"):
        Layer(int8.weights, int8.scales[:10])
    with pytest.raises(TypeError, match="layer must be a Layer"):
        gemm_step(np.ones((2, 32), np.float32), layer.weights)  # type: ignore[arg-type]


def test_bad_attention_input_gets_a_clear_error() -> None:
    q, k, v = make_kv_cache(2, 5, kv_heads=2, q_heads=4, head_dim=8, where=CPU)
    with pytest.raises(ValueError, match="k_cache and v_cache shapes differ"):
        attention_step(q, k, v[:, :, :3])
    with pytest.raises(ValueError, match="does not match q shape"):
        attention_step(q[:1], k, v)
    with pytest.raises(ValueError, match="q_heads must be a multiple of kv_heads"):
        make_kv_cache(1, 5, kv_heads=3, q_heads=4, head_dim=8)
    with pytest.raises(ValueError, match="context_tokens must be >= 1"):
        make_kv_cache(1, 0)


def test_bad_step_configs_and_curves() -> None:
    with pytest.raises(ValueError, match="d_out must be a multiple of 4"):
        StepConfig(d_out=6)
    with pytest.raises(ValueError, match="activation_dtype must be one of 'fp32', 'fp16'; got 'int8'"):
        StepConfig(activation_dtype="int8")
    with pytest.raises(ValueError, match="kernel must be one of"):
        measure_curve("conv", [1], where=CPU, peaks=PEAKS)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        measure_curve("gemm", [1, 0], StepConfig(8, 8), where=CPU, peaks=PEAKS)
    with pytest.raises(ValueError, match="non-empty sequence"):
        measure_curve("gemm", [], where=CPU, peaks=PEAKS)
    with pytest.raises(ValueError, match="needs context_tokens >= 1"):
        measure_curve("attention", [1], StepConfig(8, 8), where=CPU, peaks=PEAKS)
    with pytest.raises(ValueError, match="int8 weights run in kernel 'tiled'"):
        measure_curve("gemm", [1], StepConfig(8, 8, "int8"), where=CPU, peaks=PEAKS)
    with pytest.raises(TypeError, match="peaks must be a Peaks"):
        measure_curve("gemm", [1], StepConfig(8, 8), where=CPU, peaks=(1e9, 1e12))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="source must say where the peaks come from"):
        Peaks(1e9, 1e12, "")


# ---- the CUDA kernel, as far as a CPU can check it -----------------------------------------------


@pytest.mark.parametrize(("batch", "d_out", "dtype"), [(1, 4, "int8"), (16, 64, "fp16"), (17, 130, "fp16")])
def test_launch_covers_every_output_once(batch: int, d_out: int, dtype: str) -> None:
    (tiles, chunks), (threads,) = launch_config(batch, d_out, dtype)
    tile = 32 * {"fp16": 2, "int8": 4}[dtype]
    assert (tiles - 1) * tile < d_out <= tiles * tile
    per_block = kernels.MAX_BATCH_PER_BLOCK
    assert (chunks - 1) * per_block < batch <= chunks * per_block
    assert threads == 256


def test_launch_refuses_what_the_kernel_cannot_read() -> None:
    with pytest.raises(ValueError, match="d_out must be a multiple of 2 for fp16"):
        launch_config(1, 129, "fp16")
    with pytest.raises(ValueError, match="dtype must be one of 'fp16', 'int8'; got 'fp32'"):
        launch_config(1, 128, "fp32")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        launch_config(0, 128, "fp16")


def test_cuda_source_agrees_with_its_launcher() -> None:
    src = kernels.CUDA_SOURCE
    for name in ("batched_matvec_fp16", "batched_matvec_int8"):
        assert f'extern "C" __global__ void __launch_bounds__(32 * WARPS)\n{name}(' in src
    assert f"#define MAX_BATCH {kernels.MAX_BATCH_PER_BLOCK} " in src
    assert "#define WARPS 8 " in src  # 8 warps = the 256 threads launch_config asks for


# A stand-in for the CUDA runtime: each block runs as 256 host threads, __syncthreads a barrier.
_CUDA_SHIM = r"""
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstddef>
#define __global__
#define __device__
#define __restrict__
#define __shared__ static
#define __launch_bounds__(n)
struct __half { _Float16 v; };
struct __half2 { __half x, y; };
struct float2 { float x, y; };
struct char4 { signed char x, y, z, w; };
struct dim3 { unsigned x = 0, y = 0, z = 0; };
extern thread_local dim3 threadIdx;
extern dim3 blockIdx, blockDim;
extern std::barrier<>* block_barrier;
inline float __half2float(__half h) { return (float)h.v; }
inline float2 __half22float2(__half2 h) { return {(float)h.x.v, (float)h.y.v}; }
using std::min;
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
"""

_CUDA_HARNESS = r"""
#include "cuda_fp16.h"
#include "kernel.cu"
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>
thread_local dim3 threadIdx;
dim3 blockIdx, blockDim;
std::barrier<>* block_barrier;

template <class T> std::vector<T> load(const char* path, size_t n) {
    std::vector<T> out(n);
    FILE* f = std::fopen(path, "rb");
    if (!f || std::fread(out.data(), sizeof(T), n, f) != n) std::exit(2);
    std::fclose(f);
    return out;
}
void save(const char* path, const std::vector<float>& y) {
    FILE* f = std::fopen(path, "wb");
    std::fwrite(y.data(), sizeof(float), y.size(), f);
    std::fclose(f);
}
template <class F> void launch(unsigned gx, unsigned gy, unsigned threads, F kernel) {
    blockDim.x = threads;
    for (unsigned by = 0; by < gy; ++by)
        for (unsigned bx = 0; bx < gx; ++bx) {
            blockIdx.x = bx;
            blockIdx.y = by;
            std::barrier<> barrier(threads);
            block_barrier = &barrier;
            std::vector<std::thread> pool;
            for (unsigned t = 0; t < threads; ++t) pool.emplace_back([&, t] { threadIdx.x = t; kernel(); });
            for (auto& th : pool) th.join();
        }
}
int main(int argc, char** argv) {
    const int B = std::atoi(argv[1]), K = std::atoi(argv[2]), N = std::atoi(argv[3]);
    const unsigned gx16 = std::atoi(argv[4]), gy16 = std::atoi(argv[5]);
    const unsigned gx8 = std::atoi(argv[6]), gy8 = std::atoi(argv[7]), threads = std::atoi(argv[8]);
    auto x = load<__half>("x.bin", (size_t)B * K);
    auto w = load<__half>("w.bin", (size_t)K * N);
    auto q = load<signed char>("q.bin", (size_t)K * N);
    auto s = load<float>("s.bin", N);
    std::vector<float> y16((size_t)B * N, NAN), y8((size_t)B * N, NAN);
    launch(gx16, gy16, threads, [&] { batched_matvec_fp16(x.data(), w.data(), y16.data(), B, K, N); });
    launch(gx8, gy8, threads, [&] { batched_matvec_int8(x.data(), q.data(), s.data(), y8.data(), B, K, N); });
    save("y16.bin", y16);
    save("y8.bin", y8);
    return 0;
}
"""


@pytest.fixture(scope="module")
def cuda_emulator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CUDA source compiled for the host (g++ -std=c++20), or a skip when no such compiler exists."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ to emulate the CUDA kernel on the host")
    root = tmp_path_factory.mktemp("cuda")
    (root / "cuda_fp16.h").write_text(_CUDA_SHIM)
    (root / "probe.cpp").write_text(
        '#include "cuda_fp16.h"\nint main() { __half h{1}; return (int)h.v - 1; }\n'
    )
    flags = ["-std=c++20", "-O1", "-pthread", "-Wno-unknown-pragmas", "-I", str(root)]
    probe = subprocess.run([compiler, *flags, "probe.cpp", "-o", "probe"], cwd=root, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("g++ lacks C++20 <barrier> or _Float16, needed to emulate the CUDA kernel")
    (root / "kernel.cu").write_text(kernels.CUDA_SOURCE)
    (root / "harness.cpp").write_text(_CUDA_HARNESS)
    build = subprocess.run(
        [compiler, *flags, "harness.cpp", "-o", "harness"], cwd=root, capture_output=True, text=True
    )
    assert build.returncode == 0, f"the CUDA source does not compile as C++:\n{build.stderr[-3000:]}"
    return root


@pytest.mark.parametrize(("batch", "d_in", "d_out"), [(1, 75, 132), (40, 64, 260)])
def test_cuda_kernel_emulated_on_the_host_matches_the_reference(
    cuda_emulator: Path, batch: int, d_in: int, d_out: int
) -> None:
    # The real kernel code, each block run by 256 host threads: index math, tiles at the edges, the
    # batch split over blocks and the warps' reduction, checked without a GPU.
    fp16 = make_layer(d_in, d_out, "fp16", seed=batch, where=CPU)
    int8 = make_layer(d_in, d_out, "int8", seed=batch, where=CPU)
    x16 = make_activations(batch, d_in, "fp16", seed=batch, where=CPU)
    for name, array in (("x", x16), ("w", fp16.weights), ("q", int8.weights), ("s", int8.scales)):
        array.tofile(cuda_emulator / f"{name}.bin")
    (g16, b16), (threads,) = launch_config(batch, d_out, "fp16")
    (g8, b8), _ = launch_config(batch, d_out, "int8")
    args = [str(v) for v in (batch, d_in, d_out, g16, b16, g8, b8, threads)]
    subprocess.run([str(cuda_emulator / "harness"), *args], cwd=cuda_emulator, check=True, timeout=120)
    y16 = np.fromfile(cuda_emulator / "y16.bin", dtype=np.float32).reshape(batch, d_out)
    y8 = np.fromfile(cuda_emulator / "y8.bin", dtype=np.float32).reshape(batch, d_out)
    assert_within(y16, *reference(x16, fp16.weights))
    assert_within(y8, *reference(x16, dequantize(int8)))
    # ... and the NumPy twin computes the same numbers.
    assert_within(tiled_matvec(x16.astype(np.float32), int8), *reference(x16, dequantize(int8)))


# ---- measuring -----------------------------------------------------------------------------------


def test_time_calls_counts_its_calls() -> None:
    seen: list[int] = []
    seconds = time_calls_s(seen.append, repeats=4, warmup=2, where=CPU)
    assert seen == list(range(6))
    assert seconds.shape == (4,) and np.all(seconds >= 0)


def test_measure_peaks_on_this_cpu() -> None:
    peaks = measure_peaks(CPU, bandwidth_bytes=8 << 20, matmul_size=256, repeats=2)
    assert peaks.bandwidth_bytes_per_s > 1e8 and peaks.flops_per_s > 1e8
    assert peaks.source.startswith("measured on") and peaks.measured_at.endswith("Z")


@pytest.mark.parametrize(
    ("kernel", "config"),
    [
        ("gemm", StepConfig(64, 128)),
        ("tiled", StepConfig(64, 128, "int8")),
        ("rowwise", StepConfig(64, 128, "fp16")),
        ("attention", StepConfig(64, 128, context_tokens=16, kv_heads=2, q_heads=4, head_dim=8)),
        ("gemm", StepConfig(64, 128, context_tokens=16, kv_heads=2, q_heads=4, head_dim=8)),
    ],
)
def test_a_curve_has_the_documented_columns(kernel: str, config: StepConfig) -> None:
    frame = measure_curve(
        kernel, [1, 3], config, repeats=2, warmup=1, passes=2, stream_bytes=1 << 20, peaks=PEAKS, where=CPU
    )
    assert list(frame.columns) == list(CURVE_COLUMNS)
    assert frame["batch_size"].tolist() == [1, 3]
    assert (frame["repeats"] == 4).all() and (frame["backend"] == "numpy").all()
    traffic = config.traffic(kernel)
    np.testing.assert_allclose(frame["bytes_moved"], traffic.bytes_moved(np.array([1.0, 3.0])))
    np.testing.assert_allclose(frame["gb_per_s"], frame["bytes_moved"] / frame["seconds"] / 1e9)
    np.testing.assert_allclose(frame["compute_fraction"], frame["flops"] / frame["seconds"] / 200e9)
    assert (frame["seconds"] <= frame["seconds_median"]).all()
    assert (frame["overhead_s"] > 0).all() and (frame["overhead_s"] < frame["seconds"]).all()
    doubled = with_peaks(frame, Peaks(40e9, 400e9, "twice as fast"))
    np.testing.assert_allclose(doubled["bandwidth_fraction"], frame["bandwidth_fraction"] / 2)
    assert (doubled["peak_source"] == "twice as fast").all()


# ---- the shipped measurement ---------------------------------------------------------------------


def test_the_shipped_cpu_curves() -> None:
    curves = load_kernel_curves()
    assert list(curves.columns) == list(CURVE_COLUMNS)
    assert set(curves["backend"]) == {"numpy"} and curves["device"].nunique() == 1
    assert curves["measured_at"].str.match(r"\d{4}-\d\d-\d\dT").all()
    assert curves["peak_source"].str.startswith("measured on").all()
    gemm = curves[(curves["kernel"] == "gemm") & (curves["context_tokens"] == 0)].set_index("batch_size")
    assert gemm.loc[64, "tokens_per_s"] >= 5 * gemm.loc[1, "tokens_per_s"]
    # A long KV cache erodes the gain: each request brings its own bytes.
    kv = curves[(curves["kernel"] == "gemm") & (curves["context_tokens"] == curves["context_tokens"].max())]
    kv = kv.set_index("batch_size")
    assert (
        kv.loc[64, "tokens_per_s"] / kv.loc[1, "tokens_per_s"]
        < gemm.loc[64, "tokens_per_s"] / gemm.loc[1, "tokens_per_s"]
    )
    fit = fit_curve(curves, "gemm", dtype="fp32")
    assert 1 < fit.ridge_batch_size < 1024 and fit.points_memory_bound and fit.points_compute_bound
    hardware = measured_hardware(curves)
    assert isinstance(hardware, Hardware) and hardware.name.endswith("(measured)")
    assert hardware.source.startswith("measured on") and len(hardware.source_date) == 10


def test_curve_selection_errors() -> None:
    curves = load_kernel_curves()
    with pytest.raises(ValueError, match="no rows for kernel 'attention'"):
        fit_curve(curves, "attention")
    with pytest.raises(ValueError, match="more than one step"):
        fit_curve(curves, "tiled")  # fp32 and int8 both
    with pytest.raises(ValueError, match="overhead_s must be one of 'measured'"):
        fit_curve(curves, "gemm", overhead_s="fitted")
    with pytest.raises(ValueError, match="lacks the columns"):
        fit_curve(pd.DataFrame({"kernel": ["gemm"]}))
    with pytest.raises(ValueError, match="no 'nothing.csv' in scaleplay/data"):
        load_kernel_curves("nothing.csv")


# ---- GPU: parity with the twins (skipped without a device) ---------------------------------------


@pytest.fixture(scope="module")
def gpu() -> Backend:
    pytest.importorskip("cupy")
    where = gpu_backend()
    if where is None:
        pytest.skip("CuPy imports but no CUDA device answers")
    return where


def _on(layer: Layer, where: Backend) -> Layer:
    return Layer(
        to_device(layer.weights, where), None if layer.scales is None else to_device(layer.scales, where)
    )


@pytest.mark.gpu
def test_gpu_kernel_source_compiles(gpu: Backend) -> None:
    assert set(kernels._cuda_kernels()) == {"fp16", "int8"}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp16", "int8"])
@pytest.mark.parametrize(("batch", "d_in", "d_out"), [(1, 4096, 16384), (17, 1000, 260), (300, 512, 1024)])
def test_gpu_tiled_kernel_matches_the_twin(
    gpu: Backend, dtype: str, batch: int, d_in: int, d_out: int
) -> None:
    layer = make_layer(d_in, d_out, dtype, seed=batch, where=CPU)
    x16 = make_activations(batch, d_in, "fp16", seed=batch, where=CPU)
    exact, bound = reference(x16, dequantize(layer))
    y_gpu = tiled_matvec(to_device(x16, gpu), _on(layer, gpu))
    assert array_module(y_gpu) is gpu.xp
    assert_within(y_gpu, exact, bound)
    assert_within(tiled_matvec(x16.astype(np.float32), layer), exact, bound)


@pytest.mark.gpu
def test_gpu_gemm_and_attention_match_numpy(gpu: Backend) -> None:
    layer = make_layer(1024, 2048, "fp16", where=CPU)
    x16 = make_activations(8, 1024, "fp16", where=CPU)
    exact, bound = reference(x16, layer.weights)
    y = gemm_step(to_device(x16, gpu), _on(layer, gpu))  # fp16 out: another 2^-11 of |y|
    assert_within(y, exact, bound + 2.0**-11 * np.abs(exact) + 1e-7)
    q, k, v = make_kv_cache(4, 300, kv_heads=2, q_heads=8, head_dim=64, dtype="fp16", where=CPU)
    expected = attention_step(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32))
    out = attention_step(to_device(q, gpu), to_device(k, gpu), to_device(v, gpu))
    np.testing.assert_allclose(to_host(out), expected, rtol=2e-2, atol=2e-3)


@pytest.mark.gpu
def test_gpu_curve(gpu: Backend) -> None:
    config = StepConfig.for_backend(gpu, d_in=1024, d_out=4096, dtype="int8")
    frame = measure_curve("tiled", [1, 64], config, repeats=5, stream_bytes=64 << 20, where=gpu)
    assert (frame["backend"] == "cupy").all() and frame["seconds"].gt(0).all()
