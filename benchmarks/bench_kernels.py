"""Measure the batching curves of one decode step and write them to a CSV (``scaleplay.kernels``).

    python benchmarks/bench_kernels.py          # ~1 minute on a CPU; writes data/kernel_curves_cpu.csv
    python benchmarks/bench_kernels.py --quick  # ~10 s; writes nothing unless --out is given

(``data/`` is ``lib/scaleplay/data/``; on a GPU the file is ``kernel_curves_gpu.csv``.)

On the backend the process picks (CuPy on a working GPU, else NumPy; ``SCALEPLAY_FORCE_NUMPY=1``
forces NumPy) it times, over batch sizes:

- ``gemm``: the vendor GEMM of the step's layer (1024 -> 4096 fp32 on a CPU, 4096 -> 16384 fp16 on
  a GPU);
- ``tiled``: the weight-reuse kernel (CUDA on a GPU, its NumPy twin on a CPU), with the layer's
  weights and with int8 weights;
- ``rowwise``: one matrix-vector product per request, the weights read once per request;
- ``gemm`` plus attention over a KV cache of a few context lengths.

It prints each curve, then the figures the book quotes: tokens/s at batch 64 over batch 1, the
roofline fitted to the GEMM curve (bandwidth, peak, overhead, ridge batch size) next to the
device's peaks, int8 against the layer's dtype, and how the KV cache erodes the batching gain.
Every row of the CSV carries the device, backend, versions, peaks and the time of measurement.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from scaleplay.backend import backend
from scaleplay.kernels import (
    Peaks,
    StepConfig,
    device_peaks,
    fit_curve,
    measure_curve,
    measure_peaks,
    with_peaks,
)

DATA = Path(__file__).resolve().parents[1] / "lib" / "scaleplay" / "data"


@dataclass(frozen=True)
class Plan:
    batches: list[int]  # gemm and tiled (fp and int8)
    kv_batches: list[int]  # gemm + attention, at each of `contexts`
    contexts: list[int]
    row_batches: list[int]  # rowwise: its time grows with the batch, so fewer
    passes: int  # sweeps over the batch sizes (spreads each one's calls over the run)
    repeats: int  # timed calls per batch size and pass
    warmup: int
    stream_bytes: int | None = None  # None: measure_curve's default (past the last-level cache)


POWERS = [2**i for i in range(13)]
PLANS = {
    ("cpu", False): Plan(POWERS[:11], [1, 4, 16, 64], [256, 1024], POWERS[:7], 3, 6, 2),
    ("cpu", True): Plan([1, 4, 16, 64, 256], [1, 16, 64], [1024], [1, 8], 2, 3, 1, 256 << 20),
    ("gpu", False): Plan(POWERS, [1, 4, 16, 64, 128], [1024, 4096, 16384], POWERS[:7], 3, 20, 5),
    ("gpu", True): Plan([1, 4, 16, 64, 256, 1024, 4096], [1, 16, 64], [4096], [1, 8], 2, 10, 3),
}


def show(frame: pd.DataFrame, title: str) -> None:
    print(f"\n{title}")
    print(
        f"  {'batch':>6} {'ms':>9} {'tokens/s':>11} {'GB/s':>8} {'TFLOP/s':>8} "
        f"{'of peak BW':>10} {'of peak FLOP':>12}"
    )
    for row in frame.itertuples():
        print(
            f"  {row.batch_size:>6} {row.seconds * 1e3:>9.3f} {row.tokens_per_s:>11,.0f} "
            f"{row.gb_per_s:>8.1f} {row.tflop_per_s:>8.3f} "
            f"{row.bandwidth_fraction:>10.1%} {row.compute_fraction:>12.1%}"
        )


def tokens_per_s(frame: pd.DataFrame, batch: int) -> float:
    return float(frame.loc[frame["batch_size"] == batch, "tokens_per_s"].iloc[0])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes and repeats (~10 s)")
    parser.add_argument("--out", type=Path, help="CSV to write (default: data/kernel_curves_<cpu|gpu>.csv)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    where = backend()
    kind = "gpu" if where.is_gpu else "cpu"
    plan = PLANS[(kind, args.quick)]
    batches, kv_batches, contexts, row_batches = (
        plan.batches,
        plan.kv_batches,
        plan.contexts,
        plan.row_batches,
    )
    base = StepConfig.for_backend(where)
    out = args.out
    if out is None and not args.quick and not args.no_write:
        out = DATA / f"kernel_curves_{kind}.csv"
    if args.no_write:
        out = None

    started = time.perf_counter()
    print(f"backend: {where.name} on {where.device}; step: {base.d_in} -> {base.d_out} {base.dtype}")
    before = measure_peaks(where, repeats=3 if args.quick else 10)
    common = {
        "repeats": plan.repeats,
        "passes": plan.passes,
        "warmup": plan.warmup,
        "stream_bytes": plan.stream_bytes,
        "peaks": before,
        "seed": args.seed,
        "where": where,
    }
    curves = [
        ("gemm", batches, base, f"gemm ({base.dtype}): the vendor GEMM"),
        ("tiled", batches, base, f"tiled ({base.dtype}): each weight tile read once for the whole batch"),
        ("tiled", batches, replace(base, dtype="int8"), "tiled (int8 weights, per-column scales)"),
        ("rowwise", row_batches, base, f"rowwise ({base.dtype}): the weights read once per request"),
    ] + [
        (
            "gemm",
            kv_batches,
            replace(base, context_tokens=c),
            f"gemm + attention over {c} tokens of KV per request",
        )
        for c in contexts
    ]
    frames = []
    for kernel, sizes, config, title in curves:
        print(f"  measuring {title} ...", flush=True)
        frames.append(measure_curve(kernel, sizes, config, **common))

    if where.is_gpu:  # fractions of the datasheet's peaks
        peaks = device_peaks(where)
    else:  # the CPU's own peaks: the best of a measurement before the curves and one after
        after = measure_peaks(where, repeats=3 if args.quick else 10)
        peaks = Peaks(
            bandwidth_bytes_per_s=max(before.bandwidth_bytes_per_s, after.bandwidth_bytes_per_s),
            flops_per_s=max(before.flops_per_s, after.flops_per_s),
            source=f"{after.source}; best of a run before and one after the curves",
            measured_at=after.measured_at,
        )
    print(
        f"peaks: {peaks.bandwidth_bytes_per_s / 1e9:.1f} GB/s, {peaks.flops_per_s / 1e12:.3f} TFLOP/s "
        f"({peaks.source})"
    )
    frames = [with_peaks(frame, peaks) for frame in frames]
    for (_, _, _, title), frame in zip(curves, frames, strict=True):
        show(frame, title)
    gemm, tiled, int8, rowwise = frames[:4]
    result = pd.concat(frames, ignore_index=True)

    # The figures the book quotes.
    print("\nsummary")
    print(f"  gemm tokens/s, batch 64 / batch 1: {tokens_per_s(gemm, 64) / tokens_per_s(gemm, 1):.1f}x")
    print(
        f"  rowwise tokens/s, batch {row_batches[-1]} / batch 1: "
        f"{tokens_per_s(rowwise, row_batches[-1]) / tokens_per_s(rowwise, 1):.1f}x"
    )
    free = fit_curve(result, "gemm", dtype=base.dtype, overhead_s=None)
    fit = fit_curve(result, "gemm", dtype=base.dtype)  # the overhead measured on a tiny step
    overhead_us = gemm["overhead_s"].iloc[0] * 1e6
    for name, f in (("overhead fitted", free), (f"overhead measured, {overhead_us:.1f} us", fit)):
        print(
            f"  roofline fitted to gemm ({name}): bandwidth {f.bandwidth_bytes_per_s / 1e9:.1f} GB/s "
            f"({f.bandwidth_bytes_per_s / peaks.bandwidth_bytes_per_s:.0%} of peak), "
            f"peak {f.peak_flops_per_s / 1e12:.3f} TFLOP/s "
            f"({f.peak_flops_per_s / peaks.flops_per_s:.0%} of peak), "
            f"overhead {f.overhead_s * 1e6:.1f} us, ridge batch {f.ridge_batch_size:.1f}, "
            f"rms log error {f.rms_log_error:.3f} ({f.points_memory_bound} memory-bound / "
            f"{f.points_compute_bound} compute-bound points)"
        )
    for batch in (1, 64, batches[-1]):
        print(
            f"  batch {batch:>4}: int8 / {base.dtype} (both tiled) tokens/s "
            f"{tokens_per_s(int8, batch) / tokens_per_s(tiled, batch):.2f}x; "
            f"tiled / gemm {tokens_per_s(tiled, batch) / tokens_per_s(gemm, batch):.2f}x"
        )
    top = kv_batches[-1]
    print(
        f"  no KV cache: tokens/s batch {top} / batch 1 = "
        f"{tokens_per_s(gemm, top) / tokens_per_s(gemm, 1):.1f}x"
    )
    for context, frame in zip(contexts, frames[4:], strict=True):
        traffic = replace(base, context_tokens=context).traffic("gemm")
        ridge = traffic.ridge_batch_size(fit.bandwidth_bytes_per_s, fit.peak_flops_per_s)
        print(
            f"  {context:>6} tokens of KV: tokens/s batch {top} / batch 1 = "
            f"{tokens_per_s(frame, top) / tokens_per_s(frame, 1):.1f}x; "
            f"{traffic.bytes_per_item / 1e6:.1f} MB per request against {traffic.bytes_fixed / 1e6:.1f} MB "
            f"of weights per step; ridge batch on the fitted device {ridge:.1f}"
        )
    print(f"\n{len(result)} measurements in {time.perf_counter() - started:.0f} s")
    if out is not None:
        result.to_csv(out, index=False, float_format="%.8g")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
