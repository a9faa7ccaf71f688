"""Speed, fidelity and memory of the simulators, side by side in one run.

    python benchmarks/bench_simulators.py                          # 1M customers or 60 s per simulator
    python benchmarks/bench_simulators.py --quick                  # a smoke run, under a minute
    python benchmarks/bench_simulators.py --before /tmp/oldrepo/lib   # the simpy cases on old code too
    python benchmarks/bench_simulators.py --customers 200000 --seconds 10   # a shorter run

1. M/M/4 at utilization 0.8 (arrival rate 3.2/s, service rate 1/s, 4 servers): ciw, the simpy model
   (``simulator.simulate``) and the fast path each run ``--customers`` customers, or fewer if a pilot
   run says that would take longer than ``--seconds``. It prints customers simulated per second of
   wall time, the ratio to ciw measured in this same run, and the mean wait against Erlang C with a
   95% confidence interval (the first 10% of customers left out as warm-up).
2. A batching pool (8 replicas, batches of up to 32, an affine batch time): requests simulated per
   second when batching packs many requests into each event (arrivals generated before the clock
   starts, so the figure is the simulator's alone).
3. The 10M-user peak hour: 6.25M requests in one hour (1,736 requests/s, Poisson), Llama-3.1-8B on
   an H100 SXM (``profiles.RooflineServiceTime``), 500 tokens in and 440 out, batches of up to 32
   (``max_wait_s`` 0.1 s), and the replicas that put the pool at utilization 0.7 of its full-batch
   capacity. It runs in a fresh subprocess, which reports its wall time (arrivals generated before the
   clock starts) and its peak memory (``ru_maxrss``).
4. Events per request of each simpy case: how many events simpy scheduled, over the requests.
5. With ``--before PATH``, the simpy cases run again in subprocesses with ``PYTHONPATH=PATH`` (the
   code before a change), so the table shows before and after side by side.

Targets (reported, never asserted): the simpy model at least 5x ciw (moonshot 10x) with its mean wait
inside the Erlang C confidence interval, the fast path at least 100x ciw, the batching pool at least
1M requests/s, the peak hour in under 20 s and 1.5 GB of peak memory.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import ciw
import numpy as np
import pandas as pd

from scaleplay.fastpath import exponential_arrays, fifo_waits_s, mmc_replications
from scaleplay.metrics import batch_means_ci, replication_ci
from scaleplay.profiles import AffineServiceTime, RandomServiceTime
from scaleplay.queueing import mmc_mean_wait_s
from scaleplay.simulator import BatcherConfig, PlatformConfig, PoolConfig, simulate
from scaleplay.workload import Workload, generate_arrivals

ARRIVAL_RATE_PER_S, SERVICE_RATE_PER_S, SERVERS = 3.2, 1.0, 4
WARMUP_SHARE = 0.1
REPLICATIONS = 100
PILOT_CUSTOMERS = 20_000
BLOCK_CUSTOMERS = 20_000
LONG_FACTOR = 100  # the fidelity run simulates this many times --customers
COUNT_REQUESTS = 20_000  # requests in each event-counting run

# The batching pool.
POOL_REPLICAS, POOL_MAX_BATCH, POOL_LOAD = 8, 32, 0.8
POOL_CURVE = AffineServiceTime(fixed_s=0.05, per_item_s=0.005)  # a batch of 32 takes 0.21 s

# The 10M-user peak hour.
PEAK_REQUESTS_PER_HOUR = 6_250_000
PEAK_HARDWARE, PEAK_MODEL = "H100 SXM", "Llama-3.1-8B"
PEAK_TOKENS_IN, PEAK_TOKENS_OUT = 500, 440  # t(32) = 2.77 s: 215 replicas at rho 0.7
PEAK_MAX_BATCH, PEAK_MAX_WAIT_S, PEAK_LOAD = 32, 0.1, 0.7
PEAK_CHILD_TIMEOUT_S = 1800

# Targets (reported, never asserted).
TARGET_MODEL_VS_CIW, MOONSHOT_MODEL_VS_CIW = 5.0, 10.0
TARGET_FAST_VS_CIW = 100.0
TARGET_POOL_PER_S = 1_000_000
TARGET_PEAK_S, TARGET_PEAK_GB = 20.0, 1.5

MODEL_NAME = "simpy model (simulator.simulate)"
RESULT_MARK = "@@bench-result@@ "  # a child's result: this mark, then one line of JSON

# A run returns the waits of its customers in arrival order (1-D), or per-replication mean waits.
Run = Callable[[int, int], np.ndarray]


# --------------------------------------------------------------------------------------------------
# Counting simpy's events without touching the library
# --------------------------------------------------------------------------------------------------


class EnvironmentRecorder:
    """Inside the block, every ``simpy.Environment`` created is kept, to read its event counter after.

    simpy numbers every event it schedules from ``env._eid`` (an ``itertools.count``), so the next
    number is the count of events scheduled so far. Only ``Environment.__init__`` is wrapped: nothing
    runs per event, so a timed run inside the block is timed as it is.
    """

    def __enter__(self) -> EnvironmentRecorder:
        import simpy.core

        self.envs: list[Any] = []
        self._cls = simpy.core.Environment
        self._init = init = self._cls.__init__
        envs = self.envs

        def recording_init(env: Any, *args: Any, **kwargs: Any) -> None:
            init(env, *args, **kwargs)
            envs.append(env)

        self._cls.__init__ = recording_init
        return self

    def __exit__(self, *exc: object) -> None:
        self._cls.__init__ = self._init
        self._events = None
        counters = [getattr(env, "_eid", None) for env in self.envs]
        if self.envs and all(c is not None for c in counters):
            self._events = sum(next(c) for c in counters)  # read once: next() advances the counter

    @property
    def events(self) -> int | None:
        """Events the recorded environments scheduled (None if none was seen or simpy hid its counter)."""
        return self._events


class ScheduleCounter:
    """Inside the block, every call of ``simpy.Environment.schedule`` is counted (a per-event wrapper:
    only for counting runs, never for timed ones). A cross-check of ``EnvironmentRecorder``."""

    def __enter__(self) -> ScheduleCounter:
        import simpy.core

        self.events = 0
        self._cls = simpy.core.Environment
        self._schedule = schedule = self._cls.schedule
        counter = self

        def counting_schedule(env: Any, *args: Any, **kwargs: Any) -> None:
            counter.events += 1
            schedule(env, *args, **kwargs)

        self._cls.schedule = counting_schedule
        return self

    def __exit__(self, *exc: object) -> None:
        self._cls.schedule = self._schedule


def count_events(run: Run, requests: int, seed: int) -> dict[str, float | None]:
    """Events per request of one untimed run: from simpy's event counter and from counted schedule calls."""
    with EnvironmentRecorder() as recorder, ScheduleCounter() as counter:
        out = run(requests, seed)
    n = len(out)
    eid = recorder.events
    return {
        "events_per_request": None if eid is None else eid / n,
        "schedule_calls_per_request": counter.events / n,
        "counted_requests": n,
    }


# --------------------------------------------------------------------------------------------------
# M/M/4
# --------------------------------------------------------------------------------------------------


def run_ciw(customers: int, seed: int) -> np.ndarray:
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(rate=ARRIVAL_RATE_PER_S)],
        service_distributions=[ciw.dists.Exponential(rate=SERVICE_RATE_PER_S)],
        number_of_servers=[SERVERS],
    )
    ciw.seed(seed)
    simulation = ciw.Simulation(network)
    simulation.simulate_until_max_customers(customers, method="Finish")
    records = sorted(simulation.get_all_records(), key=lambda r: r.arrival_date)
    return np.array([r.waiting_time for r in records])


def run_model(customers: int, seed: int) -> np.ndarray:
    workload = Workload.from_rate(ARRIVAL_RATE_PER_S)
    arrivals = generate_arrivals(workload, customers / ARRIVAL_RATE_PER_S, seed=seed)
    service = RandomServiceTime(AffineServiceTime(fixed_s=1.0 / SERVICE_RATE_PER_S), "exponential")
    config = PlatformConfig(pool=PoolConfig(replicas=SERVERS, service=service, policy="shared_queue"))
    log = simulate(arrivals, config, seed=seed).log
    return (log["model_start_s"] - log["arrived_s"]).to_numpy()


def run_fast_stream(customers: int, seed: int) -> np.ndarray:
    arrivals, services = exponential_arrays(ARRIVAL_RATE_PER_S, SERVICE_RATE_PER_S, customers, 1, seed)
    return fifo_waits_s(arrivals[0], services[0], SERVERS)


def run_fast_replications(customers: int, seed: int) -> np.ndarray:
    per_replication = max(customers // REPLICATIONS, 10)
    runs = mmc_replications(
        ARRIVAL_RATE_PER_S,
        SERVICE_RATE_PER_S,
        SERVERS,
        per_replication,
        REPLICATIONS,
        seed,
        warmup_share=WARMUP_SHARE,
    )
    return runs["mean_wait_s"].to_numpy()


def run_fast_long(customers: int, seed: int) -> np.ndarray:
    """Many replications in blocks of ``REPLICATIONS`` x ``BLOCK_CUSTOMERS``, to keep memory small."""
    per_block = REPLICATIONS * BLOCK_CUSTOMERS
    blocks = max(1, round(customers / per_block))
    return np.concatenate(
        [run_fast_replications(min(customers, per_block), seed * 10_000 + b) for b in range(blocks)]
    )


def timed(run: Run, customers: int, seed: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = run(customers, seed)
    return out, time.perf_counter() - start


def budgeted(run: Run, customers: int, seconds: float, seed: int) -> tuple[np.ndarray, int, float]:
    """Run ``customers``, or as many as a pilot run says fit in ``seconds``."""
    pilot = min(customers, PILOT_CUSTOMERS)
    out, wall_s = timed(run, pilot, seed)
    target = min(customers, int(pilot / wall_s * seconds))
    if target <= pilot:
        return out, pilot, wall_s
    out, wall_s = timed(run, target, seed)
    return out, target, wall_s


def mean_wait_ci(out: np.ndarray, replications: bool) -> tuple[float, float]:
    if replications:
        return replication_ci(out)
    return batch_means_ci(out[int(WARMUP_SHARE * len(out)) :], batches=20)


def mmc_theory_s() -> float:
    return mmc_mean_wait_s(ARRIVAL_RATE_PER_S, SERVICE_RATE_PER_S, SERVERS)


def measure_model(customers: int, seconds: float, seed: int) -> dict[str, Any]:
    """The simpy model on M/M/4: speed, mean wait against Erlang C, events per request."""
    out, _, wall_s = budgeted(run_model, customers, seconds, seed)
    mean_s, half_width_s = mean_wait_ci(out, False)
    return {
        "customers": len(out),
        "wall_s": wall_s,
        "per_s": len(out) / wall_s,
        "mean_wait_s": mean_s,
        "half_width_s": half_width_s,
        **count_events(run_model, COUNT_REQUESTS, seed),
    }


def bench_mmc(customers: int, seconds: float, seed: int, long_run: bool) -> dict[str, Any]:
    theory_s = mmc_theory_s()
    print(
        f"M/M/{SERVERS} at utilization {ARRIVAL_RATE_PER_S / (SERVERS * SERVICE_RATE_PER_S):.2f}: "
        f"Erlang C mean wait {theory_s:.4f} s. "
        f"Budget per simulator: {customers:,} customers or {seconds:g} s."
    )
    simulators: list[tuple[str, Run, bool]] = [
        ("ciw", run_ciw, False),
        (MODEL_NAME, run_model, False),
        ("fast path, one stream", run_fast_stream, False),
        (f"fast path, {REPLICATIONS} replications", run_fast_replications, True),
    ]
    if long_run:
        simulators.append((f"fast path, {LONG_FACTOR}x customers", run_fast_long, True))
    header = f"{'simulator':34} {'customers':>11} {'wall_s':>8} {'customers/s':>12} {'vs ciw':>8}"
    print(f"{header} {'mean_wait_s':>11} {'error':>7} {'95% CI':>8}", flush=True)
    rows: dict[str, Any] = {}
    ciw_rate = None
    for name, run, replications in simulators:
        wanted = customers * (LONG_FACTOR if run is run_fast_long else 1)
        out, simulated, wall_s = budgeted(run, wanted, seconds, seed)
        if not replications:
            simulated = len(out)  # the simpy model's Poisson arrivals give about, not exactly, the target
        rate = simulated / wall_s
        ciw_rate = ciw_rate or rate
        mean_s, half_width_s = mean_wait_ci(out, replications)
        rows[name] = {
            "customers": simulated,
            "wall_s": wall_s,
            "per_s": rate,
            "mean_wait_s": mean_s,
            "half_width_s": half_width_s,
        }
        print(
            f"{name:34} {simulated:>11,} {wall_s:>8.2f} {rate:>12,.0f} {rate / ciw_rate:>7.1f}x "
            f"{mean_s:>11.4f} {(mean_s - theory_s) / theory_s:>+7.2%} {half_width_s / theory_s:>7.2%}",
            flush=True,
        )
    rows[MODEL_NAME].update(count_events(run_model, COUNT_REQUESTS, seed))
    return rows


# --------------------------------------------------------------------------------------------------
# The batching pool
# --------------------------------------------------------------------------------------------------


def pool_rate_per_s() -> float:
    return POOL_LOAD * POOL_REPLICAS * POOL_MAX_BATCH / POOL_CURVE.batch_time_s(POOL_MAX_BATCH, 0, 0)


def pool_arrivals(count: int, seed: int) -> pd.DataFrame:
    rate_per_s = pool_rate_per_s()
    return generate_arrivals(Workload.from_rate(rate_per_s), count / rate_per_s, seed=seed)


def simulate_pool(arrivals: pd.DataFrame, seed: int) -> np.ndarray:
    """The batching pool on ``arrivals``; the batch size each request was served in."""
    config = PlatformConfig(
        pool=PoolConfig(
            replicas=POOL_REPLICAS,
            service=POOL_CURVE,
            batcher=BatcherConfig(max_batch_size=POOL_MAX_BATCH),
        )
    )
    return simulate(arrivals, config, seed=seed).log["batch_size"].to_numpy()


def run_pool(count: int, seed: int) -> np.ndarray:
    return simulate_pool(pool_arrivals(count, seed), seed)


def measure_pool(requests: int, seconds: float, seed: int) -> dict[str, Any]:
    """Requests simulated per second: the arrivals are generated before the clock starts (as for the
    peak hour), so the figure is the simulator's alone; a pilot sizes the run to ``seconds``."""
    pilot = pool_arrivals(min(requests, PILOT_CUSTOMERS), seed)
    start = time.perf_counter()
    simulate_pool(pilot, seed)
    pilot_s = time.perf_counter() - start
    count = min(requests, int(len(pilot) / pilot_s * seconds))
    arrivals = pool_arrivals(count, seed) if count > len(pilot) else pilot
    start = time.perf_counter()
    sizes = simulate_pool(arrivals, seed)
    wall_s = time.perf_counter() - start
    return {
        "requests": len(sizes),
        "wall_s": wall_s,
        "per_s": len(sizes) / wall_s,
        "mean_batch": len(sizes) / np.sum(1.0 / sizes),
        **count_events(run_pool, COUNT_REQUESTS, seed),
    }


def bench_batching(requests: int, seconds: float, seed: int) -> dict[str, Any]:
    row = measure_pool(requests, seconds, seed)
    print(
        f"\nBatching pool: {POOL_REPLICAS} replicas, batches of up to {POOL_MAX_BATCH}, "
        f"{pool_rate_per_s():,.0f} requests/s ({POOL_LOAD:.0%} of full-batch capacity).\n"
        f"{row['requests']:,} requests in {row['wall_s']:.2f} s: {row['per_s']:,.0f} requests/s simulated "
        f"(target >= {TARGET_POOL_PER_S:,}); mean batch size {row['mean_batch']:.1f}; "
        f"{_fmt(row['events_per_request'], '.2f')} events per request.",
        flush=True,
    )
    return row


# --------------------------------------------------------------------------------------------------
# The 10M-user peak hour, in a fresh process
# --------------------------------------------------------------------------------------------------


def _maxrss_bytes() -> int:
    """This process's peak resident set (Linux reports kilobytes, macOS bytes)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def _proc_status_bytes(field: str) -> int | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) from /proc/self/status, where there is one."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so that it then measures the simulation alone."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def peak_child(minutes: float, seed: int, profile_top: int) -> dict[str, Any]:
    """The peak-hour case, run in this (fresh) process: timed, its memory measured."""
    import scaleplay
    from scaleplay.profiles import RooflineServiceTime, load_hardware, load_model
    from scaleplay.workload import TokenDistribution, TrafficClass

    rss_imports = _maxrss_bytes()
    rate_per_s = PEAK_REQUESTS_PER_HOUR / 3600.0
    service = RooflineServiceTime(load_hardware(PEAK_HARDWARE), load_model(PEAK_MODEL))
    full_batch_s = service.batch_time_s(PEAK_MAX_BATCH, PEAK_MAX_BATCH * PEAK_TOKENS_IN, PEAK_TOKENS_OUT)
    replicas = math.ceil(rate_per_s * full_batch_s / PEAK_MAX_BATCH / PEAK_LOAD)
    config = PlatformConfig(
        pool=PoolConfig(
            replicas=replicas,
            service=service,
            batcher=BatcherConfig(max_batch_size=PEAK_MAX_BATCH, max_wait_s=PEAK_MAX_WAIT_S),
        )
    )
    chat = TrafficClass(
        "chat",
        1.0,
        tokens_in=TokenDistribution(PEAK_TOKENS_IN),
        tokens_out=TokenDistribution(PEAK_TOKENS_OUT),
    )
    workload = Workload.from_rate(rate_per_s, classes=(chat,))
    arrivals = generate_arrivals(workload, minutes * 60.0, seed=seed)
    gc.collect()
    rss_base = _maxrss_bytes()
    rss_now = _proc_status_bytes("VmRSS")
    hwm_setup = _proc_status_bytes("VmHWM")  # this process's own peak so far: imports and arrivals
    hwm_reset = _reset_peak_rss()

    narrow = "log_columns" in inspect.signature(simulate).parameters
    kwargs: dict[str, Any] = {"log_columns": "narrow"} if narrow else {}
    profiler = None
    if profile_top:
        import cProfile

        profiler = cProfile.Profile()
    with EnvironmentRecorder() as recorder:
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        result = simulate(arrivals, config, seed=seed, **kwargs)
        if profiler is not None:
            profiler.disable()
        wall_s = time.perf_counter() - start
    rss_peak = _maxrss_bytes()
    hwm = _proc_status_bytes("VmHWM") if hwm_reset else None

    log = result.log
    n = len(arrivals)
    out: dict[str, Any] = {
        "scaleplay": scaleplay.__file__,
        "requests": n,
        "minutes": minutes,
        "rate_per_s": rate_per_s,
        "full_batch_s": full_batch_s,
        "replicas": replicas,
        "log": "narrow" if narrow else "full",
        "log_columns": len(log.columns),
        "wall_s": wall_s,
        "rss_imports": rss_imports,
        "rss_base": rss_base,
        "rss_now_before": rss_now,
        "rss_peak": rss_peak,
        "hwm_setup": hwm_setup,
        "simulate_hwm": hwm,
        "hwm_peak": None if hwm is None or hwm_setup is None else max(hwm, hwm_setup),
        "events": recorder.events,
        "events_per_request": None if recorder.events is None else recorder.events / n,
        "profiled": profiler is not None,
    }
    if "outcome" in log:
        out["completed_share"] = float((log["outcome"] == "completed").mean())
    if "batch_size" in log:
        sizes = log["batch_size"].to_numpy(dtype=float)
        sizes = sizes[np.isfinite(sizes) & (sizes > 0)]
        out["mean_batch"] = float(len(sizes) / np.sum(1.0 / sizes)) if len(sizes) else None
    latency = None
    if "latency_s" in log:
        latency = log["latency_s"].to_numpy(dtype=float)
    elif "responded_s" in log and "arrived_s" in log:
        latency = (log["responded_s"] - log["arrived_s"]).to_numpy()
    if latency is not None:
        latency = latency[np.isfinite(latency)]
        if len(latency):
            out["p50_s"], out["p99_s"] = (float(q) for q in np.quantile(latency, [0.5, 0.99]))
    if profiler is not None:
        import io
        import pstats

        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(profile_top)
        out["profile"] = text.getvalue()
    return out


def run_child(flags: list[str], pythonpath: str | None, timeout_s: float) -> dict[str, Any]:
    """Run this script with hidden ``flags`` in a fresh process; its result, or ``{"error": ...}``."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    command = [sys.executable, os.path.abspath(__file__), *flags]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:g} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    return {"error": f"exit status {done.returncode}: " + " | ".join(tail)}


def bench_peak(minutes: float, seed: int, pythonpath: str | None, label: str, profile_top: int) -> dict:
    flags = ["--_peak-child", "--peak-minutes", str(minutes), "--seed", str(seed)]
    if profile_top:
        flags += ["--profile", str(profile_top)]
    row = run_child(flags, pythonpath, PEAK_CHILD_TIMEOUT_S)
    if "error" in row:
        print(f"\nPeak hour ({label}): failed: {row['error']}", flush=True)
        return row
    gb = 1e9
    hwm = row.get("simulate_hwm")
    added = (
        f"\nVmHWM (this process's own pages only): {row['hwm_peak'] / gb:.2f} GB at the peak, "
        f"{row['hwm_setup'] / gb:.2f} GB through imports and arrivals; {row['rss_now_before'] / gb:.2f} GB "
        f"resident before simulate, which raised the peak by {(hwm - row['rss_now_before']) / gb:.2f} GB "
        "(VmHWM reset before it)."
        if hwm is not None and row.get("rss_now_before") is not None and row.get("hwm_peak") is not None
        else ""
    )
    print(
        f"\nPeak hour ({label}, {row['scaleplay']}): {row['requests']:,} requests in {row['minutes']:g} min "
        f"({row['rate_per_s']:,.0f}/s), {PEAK_MODEL} on {PEAK_HARDWARE}, {PEAK_TOKENS_IN} in / "
        f"{PEAK_TOKENS_OUT} out, batches of up to {PEAK_MAX_BATCH} (max_wait_s {PEAK_MAX_WAIT_S:g}): "
        f"t({PEAK_MAX_BATCH}) = {row['full_batch_s']:.3f} s, so {row['replicas']} replicas for utilization "
        f"{PEAK_LOAD:g}.\n{row['log']} log ({row['log_columns']} columns"
        f"{'' if row['log'] == 'narrow' else '; simulate takes no log_columns yet'}). "
        f"simulate: {row['wall_s']:.2f} s{' (under cProfile)' if row['profiled'] else ''} "
        f"(target < {TARGET_PEAK_S:g} s); peak memory {row['rss_peak'] / gb:.2f} GB (ru_maxrss, target < "
        f"{TARGET_PEAK_GB:g} GB), of which {row['rss_base'] / gb:.2f} GB after imports and arrivals "
        f"({row['rss_imports'] / gb:.2f} GB after imports): "
        f"{(row['rss_peak'] - row['rss_base']) / gb:.2f} GB above that baseline.{added}\n"
        f"{_fmt(row['events_per_request'], '.2f')} events per request; completed "
        f"{_fmt(row.get('completed_share'), '.2%')}, mean batch {_fmt(row.get('mean_batch'), '.1f')}, "
        f"latency p50 {_fmt(row.get('p50_s'), '.2f')} s, p99 {_fmt(row.get('p99_s'), '.2f')} s.",
        flush=True,
    )
    if row.get("profile"):
        print(row["profile"], flush=True)
    return row


# --------------------------------------------------------------------------------------------------
# The simpy cases on other code (--before), in a subprocess
# --------------------------------------------------------------------------------------------------


def simpy_child(customers: int, seconds: float, seed: int) -> dict[str, Any]:
    import scaleplay

    return {
        "scaleplay": scaleplay.__file__,
        "model": measure_model(customers, seconds, seed),
        "pool": measure_pool(customers, seconds, seed),
    }


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _met(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "NO")


def summary(
    mmc: dict[str, Any],
    pool: dict[str, Any],
    peak: dict[str, Any] | None,
    before: dict[str, Any] | None,
    peak_before: dict[str, Any] | None,
    before_path: str | None,
) -> None:
    theory_s = mmc_theory_s()
    ciw_rate = mmc["ciw"]["per_s"]
    gb = 1e9

    def model_cells(m: dict[str, Any] | None) -> dict[str, str]:
        if m is None or "error" in m:
            return {}
        error = (m["mean_wait_s"] - theory_s) / theory_s
        inside = abs(m["mean_wait_s"] - theory_s) <= m["half_width_s"]
        return {
            "speed": f"{m['per_s']:,.0f}/s",
            "ratio": f"{m['per_s'] / ciw_rate:.1f}x",
            "wait": f"{error:+.2%} +-{m['half_width_s'] / theory_s:.2%} {'in' if inside else 'OUT'}",
            "events": _fmt(m.get("events_per_request"), ".2f"),
        }

    def pool_cells(p: dict[str, Any] | None) -> dict[str, str]:
        if p is None or "error" in p:
            return {}
        return {
            "speed": f"{p['per_s']:,.0f}/s",
            "batch": f"{p['mean_batch']:.1f}",
            "events": _fmt(p.get("events_per_request"), ".2f"),
        }

    def peak_cells(h: dict[str, Any] | None) -> dict[str, str]:
        if h is None:
            return {}
        if "error" in h:
            return {"time": "failed"}
        return {
            "requests": f"{h['requests']:,}",
            "replicas": f"{h['replicas']} (t(32) {h['full_batch_s']:.3f} s)",
            "time": f"{h['wall_s']:.1f} s" + (" (cProfile)" if h["profiled"] else ""),
            "memory": f"{h['rss_peak'] / gb:.2f} GB",
            "hwm": "n/a" if h.get("hwm_peak") is None else f"{h['hwm_peak'] / gb:.2f} GB",
            "above": f"{(h['rss_peak'] - h['rss_base']) / gb:.2f} GB",
            "log": h["log"],
            "events": _fmt(h.get("events_per_request"), ".2f"),
            "p99": f"{_fmt(h.get('p99_s'), '.2f')} s",
        }

    model_now = mmc[MODEL_NAME]
    now_m, now_p, now_h = model_cells(model_now), pool_cells(pool), peak_cells(peak)
    old = before if before is not None and "error" not in before else None
    old_m = model_cells(old["model"] if old else None)
    old_p = pool_cells(old["pool"] if old else None)
    old_h = peak_cells(peak_before)
    fast = [r for name, r in mmc.items() if name.startswith("fast path")]
    best_fast = max(r["per_s"] for r in fast) / ciw_rate if fast else None
    ratio = model_now["per_s"] / ciw_rate
    model_ok = (
        ratio >= TARGET_MODEL_VS_CIW and abs(model_now["mean_wait_s"] - theory_s) <= model_now["half_width_s"]
    )
    peak_ok = peak is not None and "error" not in peak

    rows = [
        ("ciw, M/M/4 customers/s", f"{ciw_rate:,.0f}/s", "(same run)", "", None),
        ("simpy model, M/M/4 customers/s", now_m["speed"], old_m.get("speed", ""), "", None),
        (
            "simpy model / ciw",
            now_m["ratio"],
            old_m.get("ratio", ""),
            f">= {TARGET_MODEL_VS_CIW:g}x (moonshot {MOONSHOT_MODEL_VS_CIW:g}x)",
            ratio >= TARGET_MODEL_VS_CIW,
        ),
        (
            "simpy model mean wait vs Erlang C",
            now_m["wait"],
            old_m.get("wait", ""),
            "inside the 95% CI",
            abs(model_now["mean_wait_s"] - theory_s) <= model_now["half_width_s"],
        ),
        ("simpy model events/request", now_m["events"], old_m.get("events", ""), "", None),
        (
            "fast path / ciw (best row)",
            _fmt(best_fast, ".0f") + "x",
            "",
            f">= {TARGET_FAST_VS_CIW:g}x",
            None if best_fast is None else best_fast >= TARGET_FAST_VS_CIW,
        ),
        (
            "batching pool requests/s",
            now_p["speed"],
            old_p.get("speed", ""),
            f">= {TARGET_POOL_PER_S:,}/s",
            pool["per_s"] >= TARGET_POOL_PER_S,
        ),
        ("batching pool mean batch", now_p["batch"], old_p.get("batch", ""), "", None),
        ("batching pool events/request", now_p["events"], old_p.get("events", ""), "", None),
        ("peak hour requests", now_h.get("requests", ""), old_h.get("requests", ""), "", None),
        ("peak hour replicas (rho 0.7)", now_h.get("replicas", ""), old_h.get("replicas", ""), "", None),
        ("peak hour log", now_h.get("log", ""), old_h.get("log", ""), "", None),
        (
            "peak hour simulate wall",
            now_h.get("time", "skipped"),
            old_h.get("time", ""),
            f"< {TARGET_PEAK_S:g} s",
            peak["wall_s"] < TARGET_PEAK_S if peak_ok else None,
        ),
        (
            "peak hour peak memory (ru_maxrss)",
            now_h.get("memory", ""),
            old_h.get("memory", ""),
            f"< {TARGET_PEAK_GB:g} GB",
            peak["rss_peak"] / gb < TARGET_PEAK_GB if peak_ok else None,
        ),
        ("  above imports + arrivals", now_h.get("above", ""), old_h.get("above", ""), "", None),
        ("peak hour peak memory (VmHWM)", now_h.get("hwm", ""), old_h.get("hwm", ""), "", None),
        ("peak hour latency p99", now_h.get("p99", ""), old_h.get("p99", ""), "", None),
        ("peak hour events/request", now_h.get("events", ""), old_h.get("events", ""), "", None),
    ]
    before_title = "before" if before_path is None else f"before ({before_path})"
    if before is not None and "error" in before:
        before_title += f": failed ({before['error'][:60]})"
    widths = (36, 28, 28, 28)
    print("\nSummary")
    head = ("case", "this code", before_title, "target")
    print(" ".join(f"{cell:{width}}" for cell, width in zip(head, widths, strict=True)) + " met")
    for name, now, then, target, ok in rows:
        cells = (name, now, then, target)
        print(" ".join(f"{cell:{width}}" for cell, width in zip(cells, widths, strict=True)) + f" {_met(ok)}")
    if not model_ok:
        print("(the simpy model meets its target only with both its speed and its mean wait in line)")


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=None, help="customers per simulator (1,000,000)")
    parser.add_argument("--seconds", type=float, default=None, help="wall-clock budget per simulator (60)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run in under a minute: small budgets, 6 min of peak"
    )
    parser.add_argument("--peak-minutes", type=float, default=None, help="minutes of the peak hour (60)")
    parser.add_argument("--skip-peak", action="store_true", help="leave out the peak hour")
    parser.add_argument("--before", metavar="PATH", help="also run the simpy cases with PYTHONPATH=PATH")
    parser.add_argument("--skip-peak-before", action="store_true", help="leave out the peak hour on PATH")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="profile the peak hour (its own run): top N"
    )
    parser.add_argument("--_peak-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_simpy-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    customers = args.customers or (20_000 if args.quick else 1_000_000)
    seconds = args.seconds or (3.0 if args.quick else 60.0)
    minutes = args.peak_minutes or (6.0 if args.quick else 60.0)
    if customers < 1000 or seconds <= 0 or not 0 < minutes <= 60 or args.profile < 0:
        parser.error("--customers must be >= 1000, --seconds > 0, --peak-minutes in (0, 60], --profile >= 0")

    if args._peak_child:
        print(RESULT_MARK + json.dumps(peak_child(minutes, args.seed, args.profile)), flush=True)
        return
    if args._simpy_child:
        print(RESULT_MARK + json.dumps(simpy_child(customers, seconds, args.seed)), flush=True)
        return

    print(
        f"Python {platform.python_version()}, numpy {np.__version__}, ciw {ciw.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    # The peak hour first, while this process is small: a child started by exec inherits its parent's
    # peak resident set in ru_maxrss (Linux), so a big parent would inflate the child's figure.
    peak = peak_before = None
    if not args.skip_peak:
        peak = bench_peak(minutes, args.seed, None, "this code", 0)
        if args.profile:
            bench_peak(minutes, args.seed, None, "this code, profiled", args.profile)
        if args.before and not args.skip_peak_before:
            peak_before = bench_peak(minutes, args.seed, args.before, "before", 0)
    print(flush=True)
    mmc = bench_mmc(customers, seconds, args.seed, long_run=not args.quick)
    pool = bench_batching(customers, seconds, args.seed)
    before = None
    if args.before:
        flags = ["--_simpy-child", "--customers", str(customers), "--seconds", str(seconds)]
        before = run_child([*flags, "--seed", str(args.seed)], args.before, PEAK_CHILD_TIMEOUT_S)
        if "error" in before:
            print(f"\nBefore ({args.before}): failed: {before['error']}", flush=True)
        else:
            m, p = before["model"], before["pool"]
            print(
                f"\nBefore ({before['scaleplay']}): simpy model {m['customers']:,} customers in "
                f"{m['wall_s']:.2f} s, {m['per_s']:,.0f}/s; batching pool {p['requests']:,} requests in "
                f"{p['wall_s']:.2f} s, {p['per_s']:,.0f}/s.",
                flush=True,
            )
    summary(mmc, pool, peak, before, peak_before, args.before)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
