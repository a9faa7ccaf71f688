"""Every bad input answered: hostile values for every public config field and function argument.

The library promises that a value it cannot use gets a ``ValueError``/``TypeError`` whose message
names the parameter, before any work starts and in bounded time and memory. Each entry of
``ENTRIES`` is a callable with valid keyword arguments; the fuzz test substitutes one argument at a
time with a hostile value (huge, tiny, NaN, inf, negative, bool, str, list, None, 10**30, 1e308,
plus values hypothesis draws) and accepts either a result or a ``ValueError``/``TypeError`` that
names the argument. A new config is one more line in ``ENTRIES``.

The simulator's configs are imported from ``scaleplay`` (top level), as a reader would. A case known
to fail is marked ``xfail(strict=True)`` in ``KNOWN_FAILURES`` with the value and the exception it
gives, until it is fixed (none is, today).
"""

from __future__ import annotations

import math
import resource
import signal
import typing
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import scaleplay
from scaleplay import profiles, scenario, trace, workload
from scaleplay._validate import (
    SHOW_CHARS,
    _show,
    check_finite,
    check_in,
    check_int,
    check_numbers,
    check_positive,
    check_probability,
)
from scaleplay.profiles import AffineServiceTime

# ---- the shared checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "value", "shown"),
    [
        (check_finite, "abc", "'abc' (str)"),  # regression: the TypeErrors named the type only
        (check_int, 1.5, "1.5 (float)"),
        (check_int, None, "None (NoneType)"),
        (check_positive, [1, 2], "[1, 2] (list)"),
        (check_finite, True, "True (bool)"),
        (check_probability, {"p": 1}, "{'p': 1} (dict)"),
        (check_finite, 10**400, "<an integer of about 401 digits>"),  # regression: OverflowError
        (check_int, 10**5000, "<an integer of about 5001 digits>"),  # repr() itself refuses these
    ],
    ids=lambda v: getattr(v, "__name__", None) or _show(v)[:24],
)
def test_messages_show_the_value(check: Callable, value: object, shown: str) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        check("knob", value) if check is not check_int else check("knob", value, maximum=10)
    assert str(caught.value).startswith("knob must be") and shown in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    "value",
    [
        list(range(10**6)),
        "x" * 10**6,
        {i: i for i in range(10**5)},
        np.zeros(10**6),
        [[[[[[[[1]]]]]]]],
        pd.DataFrame({"a": range(1000)}),
    ],
    ids=lambda v: type(v).__name__,
)
def test_huge_values_are_shown_cut_short(value: object) -> None:
    assert len(_show(value)) <= SHOW_CHARS and "\n" not in _show(value)
    with pytest.raises(TypeError) as caught:
        check_finite("knob", value)
    assert len(str(caught.value)) < 2 * SHOW_CHARS + 50


def test_check_in_and_check_numbers_refuse_odd_kinds() -> None:
    with pytest.raises(ValueError, match=r"mode must be one of 'a', 'b'; got \['a'\]"):
        check_in("mode", ["a"], ("a", "b"))  # was fine only by luck; an array raised numpy's words
    with pytest.raises(ValueError, match="mode"):
        check_in("mode", np.array(["a", "b"]), ("a", "b"))
    with pytest.raises(TypeError, match="levels must be 3 numbers"):
        check_numbers("levels", "abc", size=3)
    with pytest.raises(TypeError, match=r"levels\[1\] must be a real number"):
        check_numbers("levels", [1.0, None, 2.0])
    assert check_numbers("levels", np.array([1, 2, 3]), size=3) == [1.0, 2.0, 3.0]


# ---- hostile values --------------------------------------------------------------------------------

#: Always tried, for every argument.
FIXED: tuple[object, ...] = (
    None,
    True,
    False,
    0,
    -1,
    10**30,
    -(10**30),
    0.0,
    1e-300,
    1e308,
    -1e308,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "x",
    [],
    [1.0],
    (1, 2),
    {},
    {"a": 1},
    object(),
)

HOSTILE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.text(max_size=5),
    st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=2)), max_size=4),
    st.tuples(st.floats(), st.floats()),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.booleans(),
    st.none(),
)

#: A call of more than ``HANG_FACTOR`` x its entry's ``deadline_s`` seconds is a hang (an alarm
#: interrupts it, for the fixed values as for the drawn ones).
HANG_FACTOR = 5.0
#: The address space a case may add; beyond it numpy's allocations fail with MemoryError.
MEMORY_BYTES = 8 * 2**30


# ---- the table of public callables and valid arguments ---------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A public callable and a factory of valid keyword arguments (built lazily, so that a broken
    module fails its own cases, not the collection)."""

    name: str
    call: Callable[[], Callable]
    kwargs: Callable[[], dict]
    fields: tuple[str, ...] | None = None  # default: every argument in kwargs
    deadline_s: float = 2.0
    names: dict[str, str] = field(default_factory=dict)  # field: the name its messages use, if another
    paths: tuple[str, ...] = ()  # fields naming a file: an OSError, or a message showing the value, will do


def _type_hint(cls: type, name: str) -> type:
    return typing.get_type_hints(cls)[name]


@cache
def _service() -> AffineServiceTime:
    return AffineServiceTime(fixed_s=0.05, per_item_s=0.01, per_token_in_s=1e-5, per_token_out_s=1e-3)


@cache
def _arrivals() -> pd.DataFrame:
    return workload.generate_arrivals(workload.Workload.from_rate(2.0), 10.0, seed=1)


def _pool() -> object:
    return scaleplay.PoolConfig(replicas=2, service=_service())


@cache
def _result() -> object:
    return scaleplay.simulate(_arrivals(), scaleplay.PlatformConfig(pool=_pool()), seed=0)


def _regions() -> object:
    regions = (scaleplay.Region("east", 0.5), scaleplay.Region("west", 0.5))
    return scaleplay.RegionsConfig(regions=regions, rtt_s=((0.0, 0.05), (0.05, 0.0)))


@cache
def _region_results() -> tuple[object, object]:
    arrivals = _arrivals()
    base = scaleplay.PlatformConfig(pool=_pool(), regions=_regions())
    faulty = scaleplay.PlatformConfig(
        pool=_pool(),
        regions=scaleplay.RegionsConfig(
            regions=_regions().regions, rtt_s=_regions().rtt_s, faults=(scaleplay.Fault(2.0, "east"),)
        ),
    )
    return (
        scaleplay.simulate(arrivals, faulty, seed=0, horizon_s=60.0),
        scaleplay.simulate(arrivals, base, seed=0, horizon_s=60.0),
    )


def _offsets() -> pd.DataFrame:
    return pd.DataFrame({"t_s": [0.0, 0.5, 1.5], "tokens_in": [10, 20, 30], "tokens_out": [1, 2, 3]})


TINY_SCENARIO = """\
name: fuzz
seed: 1
phases:
  - {name: only, calls_per_day: 20000, days: 30}
models:
  - {model: Llama-3.1-8B, dtype: bf16, hardware: H100 SXM}
search: {duration_s: 10, batch_sizes: [4], max_replicas: 2}
"""


@cache
def _scenario() -> scenario.Scenario:
    return scenario.load_scenario(TINY_SCENARIO)


_THREADS = ThreadPoolExecutor(2)


def _td() -> workload.TokenDistribution:
    return workload.TokenDistribution(100.0, 0.5, 1000)


def _mode_settings() -> object:
    settings_cls = _type_hint(scaleplay.ModeControllerConfig, "surge")
    signals = _type_hint(settings_cls, "enter")
    return settings_cls(enter=signals(queue_length=10.0), exit=signals(queue_length=2.0))


HOURLY = (1, 1, 1, 1, 1, 2, 3, 5, 8, 9, 9, 8, 7, 8, 9, 9, 8, 7, 6, 5, 4, 3, 2, 1)

ENTRIES: list[Entry] = [
    # workload and trace (scaleplay.workload, scaleplay.trace)
    Entry(
        "TokenDistribution",
        lambda: workload.TokenDistribution,
        lambda: dict(median=100.0, sigma=0.5, maximum=1000),
    ),
    Entry("Difficulty", lambda: workload.Difficulty, lambda: dict(alpha=1.0, beta=2.0)),
    Entry(
        "TrafficClass",
        lambda: workload.TrafficClass,
        lambda: dict(
            name="a",
            share=1.0,
            priority=0,
            tokens_in=_td(),
            tokens_out=_td(),
            difficulty=workload.Difficulty(),
        ),
    ),
    Entry("DiurnalCosine", lambda: workload.DiurnalCosine, lambda: dict(peak_to_mean=1.5, peak_hour=14.0)),
    Entry("DiurnalHourly", lambda: workload.DiurnalHourly, lambda: dict(values=HOURLY)),
    Entry("Burst", lambda: workload.Burst, lambda: dict(start_s=0.0, duration_s=10.0, multiplier=2.0)),
    Entry(
        "Workload",
        lambda: workload.Workload,
        lambda: dict(
            daily_active_users=100.0,
            requests_per_user_per_day=2.0,
            classes=(workload.TrafficClass("a", 1.0),),
            diurnal=workload.DiurnalCosine(),
            weekly=(1.0,) * 7,
            bursts=(workload.Burst(0.0, 10.0, 2.0),),
            interarrival_cv=1.0,
            renewal="gamma",
        ),
    ),
    Entry("Workload.from_rate", lambda: workload.Workload.from_rate, lambda: dict(rate_per_s=0.5)),
    Entry("Workload.rate_per_s", lambda: workload.Workload.from_rate(1.0).rate_per_s, lambda: dict(t_s=10.0)),
    Entry(
        "Workload.expected_arrivals",
        lambda: workload.Workload.from_rate(1.0).expected_arrivals,
        lambda: dict(start_s=0.0, duration_s=60.0),
    ),
    Entry(
        "generate_arrivals",
        lambda: scaleplay.generate_arrivals,
        lambda: dict(
            workload=workload.Workload.from_rate(1e-4), duration_s=100.0, seed=0, start_s=0.0, replication=0
        ),
    ),
    Entry(
        "generate_arrivals (renewal)",
        lambda: scaleplay.generate_arrivals,
        lambda: dict(
            workload=workload.Workload.from_rate(1e-4, interarrival_cv=3.0),
            duration_s=100.0,
            seed=0,
            start_s=0.0,
        ),
    ),
    Entry(
        "load_trace",
        lambda: scaleplay.load_trace,
        lambda: dict(
            source=_offsets(),
            preset=None,
            time_column="t_s",
            tokens_in_column="tokens_in",
            tokens_out_column="tokens_out",
            time_unit="s",
            class_column=None,
            priority_column=None,
            difficulty_column=None,
            class_name="trace",
            priority=0,
            class_priorities=None,
            sort=False,
            speedup=1.0,
            window_s=(0.0, 10.0),
            seed=0,
        ),
        paths=("source",),
    ),
    Entry("interarrival_cv", lambda: trace.interarrival_cv, lambda: dict(arrivals=[0.0, 1.0, 3.0])),
    Entry("arrival_stats", lambda: trace.arrival_stats, lambda: dict(arrivals=[0.0, 1.0, 3.0], bin_s=1.0)),
    # service times (scaleplay.profiles)
    Entry(
        "AffineServiceTime",
        lambda: scaleplay.AffineServiceTime,
        lambda: dict(fixed_s=0.05, per_item_s=0.01, per_token_in_s=1e-5, per_token_out_s=1e-3),
    ),
    Entry(
        "AffineServiceTime.batch_time_s",
        lambda: _service().batch_time_s,
        lambda: dict(batch_size=4, tokens_in=100, tokens_out=10, rng=None),
        fields=("batch_size", "tokens_in", "tokens_out"),
    ),
    Entry(
        "RandomServiceTime",
        lambda: scaleplay.RandomServiceTime,
        lambda: dict(base=_service(), distribution="deterministic"),
    ),
    Entry(
        "Hardware",
        lambda: profiles.Hardware,
        lambda: dict(name="g", memory_bandwidth_bytes_per_s=3e12, peak_flops_per_s=1e15, memory_bytes=8e10),
    ),
    Entry(
        "ModelSpec",
        lambda: profiles.ModelSpec,
        lambda: dict(
            name="m",
            parameters=8e9,
            bytes_per_parameter=2.0,
            layers=32,
            kv_heads=8,
            head_dim=128,
            kv_bytes_per_element=2.0,
        ),
    ),
    Entry(
        "RooflineServiceTime",
        lambda: scaleplay.RooflineServiceTime,
        lambda: dict(
            hardware=profiles.load_hardware("H100 SXM"),
            model=profiles.load_model("Llama-3.1-8B"),
            overhead_s=0.001,
            compute_efficiency=0.5,
            bandwidth_efficiency=0.8,
            tensor_parallel=1,
        ),
    ),
    Entry(
        "RooflineServiceTime.batch_time_s",
        lambda: (
            profiles.RooflineServiceTime(
                profiles.load_hardware("H100 SXM"), profiles.load_model("Llama-3.1-8B")
            ).batch_time_s
        ),
        lambda: dict(batch_size=4, tokens_in=1000, tokens_out=100),
    ),
    Entry(
        "TabulatedServiceTime",
        lambda: scaleplay.TabulatedServiceTime,
        lambda: dict(
            batch_sizes=(1, 8),
            seconds_per_batch=(0.01, 0.024),
            per_decode_step=True,
            prefill_s_per_token=1e-5,
        ),
    ),
    Entry(
        "TabulatedServiceTime.batch_time_s",
        lambda: profiles.TabulatedServiceTime((1, 8), (0.01, 0.024), per_decode_step=True).batch_time_s,
        lambda: dict(batch_size=4, tokens_in=1000, tokens_out=100),
    ),
    Entry("load_hardware", lambda: profiles.load_hardware, lambda: dict(name="H100 SXM")),
    Entry(
        "load_model",
        lambda: profiles.load_model,
        lambda: dict(name="Llama-3.1-8B", dtype="bf16", kv_dtype="bf16"),
    ),
    # scenarios (scaleplay.scenario)
    Entry("Phase", lambda: scenario.Phase, lambda: dict(name="p", calls_per_day=1e5, days=30)),
    Entry(
        "Traffic",
        lambda: scenario.Traffic,
        lambda: dict(peak_to_mean=1.5, peak_hour=14.0, interarrival_cv=1.0),
    ),
    Entry(
        "RequestSizes",
        lambda: scenario.RequestSizes,
        lambda: dict(
            tokens_in_median=500.0,
            tokens_in_sigma=0.5,
            tokens_in_max=8000,
            tokens_out_median=200.0,
            tokens_out_sigma=0.5,
            tokens_out_max=1000,
        ),
        names={
            f"{side}_{key}": f"requests.{side}.{'maximum' if key == 'max' else key}"
            for side in ("tokens_in", "tokens_out")
            for key in ("median", "sigma", "max")
        },
    ),
    Entry("ServiceLevel", lambda: scenario.ServiceLevel, lambda: dict(p99_s=10.0, max_rejected_share=0.01)),
    Entry(
        "ModelChoice",
        lambda: scenario.ModelChoice,
        lambda: dict(model="Llama-3.1-8B", dtype="bf16", hardware="H100 SXM", tensor_parallel=1),
    ),
    Entry(
        "PriceOverrides",
        lambda: scenario.PriceOverrides,
        lambda: dict(purchase="on_demand", on_demand_usd_per_gpu_hour=(("H100 SXM", 3.0),)),
    ),
    Entry(
        "SearchSettings",
        lambda: scenario.SearchSettings,
        lambda: dict(duration_s=60.0, batch_sizes=(8, 16), max_replicas=8, replications=1, gpus_per_node=8),
    ),
    Entry(
        "Scenario",
        lambda: scaleplay.Scenario,
        lambda: dict(
            phases=_scenario().phases,
            models=_scenario().models,
            traffic=scenario.Traffic(),
            requests=scenario.RequestSizes(),
            slo=scenario.ServiceLevel(),
            prices=scenario.PriceOverrides(),
            search=scenario.SearchSettings(),
            seed=0,
            name="s",
        ),
    ),
    Entry(
        "load_scenario",
        lambda: scaleplay.load_scenario,
        lambda: dict(path_or_text=TINY_SCENARIO),
        paths=("path_or_text",),
    ),
    Entry(
        "plan_scenario",
        lambda: scaleplay.plan_scenario,
        lambda: dict(scenario=_scenario(), executor=_THREADS, progress=False),
        deadline_s=4.0,
    ),
    Entry(
        "plan_table",
        lambda: scenario.plan_table,
        lambda: dict(scenario=_scenario(), results=scenario.plan_phases(_scenario(), executor=_THREADS)),
        deadline_s=4.0,
    ),
    Entry(
        "format_plan_table",
        lambda: scenario.format_plan_table,
        lambda: dict(table=pd.DataFrame({"a": [1.0]})),
    ),
    # owned elsewhere: configs and functions, imported from the top level only
    Entry("SLO", lambda: scaleplay.SLO, lambda: dict(latency_s=1.0, target=0.99, period_s=86_400.0)),
    Entry("EnvelopeInputs", lambda: scaleplay.EnvelopeInputs, lambda: {}),
    Entry(
        "envelope",
        lambda: scaleplay.envelope,
        lambda: dict(daily_active_users=1e5, inputs=scaleplay.EnvelopeInputs()),
    ),
    Entry(
        "envelope_table",
        lambda: scaleplay.envelope_table,
        lambda: dict(users=[1e3, 1e4], inputs=scaleplay.EnvelopeInputs()),
    ),
    Entry(
        "ColdStart",
        lambda: scaleplay.ColdStart,
        lambda: dict(fixed_s=1.0, model_bytes=1e9, load_bandwidth_bytes_per_s=1e9),
    ),
    Entry(
        "AutoscalerConfig",
        lambda: scaleplay.AutoscalerConfig,
        lambda: dict(
            max_replicas=4,
            min_replicas=1,
            interval_s=15.0,
            metric="utilization",
            target=0.7,
            cooldown_s=60.0,
            cold_start=scaleplay.ColdStart(),
            forecast=None,
            replica_rate_per_s=None,
            lead_s=None,
            scale_to_zero_after_s=None,
        ),
    ),
    Entry(
        "CascadeConfig",
        lambda: scaleplay.CascadeConfig,
        lambda: dict(
            small=_pool(),
            min_confidence=0.5,
            small_competence=0.5,
            large_competence=1.0,
            human_min_confidence=None,
            human_delay_s=0.0,
        ),
    ),
    Entry(
        "ModeControllerConfig",
        lambda: scaleplay.ModeControllerConfig,
        lambda: dict(surge=_mode_settings(), emergency=None, interval_s=5.0, window_s=30.0, min_dwell_s=60.0),
    ),
    Entry(
        "OverflowConfig",
        lambda: scaleplay.OverflowConfig,
        lambda: dict(offline_rate_per_s=1.0, opens_s=0.0, price_per_request_usd=0.0),
    ),
    Entry("TimeBoxConfig", lambda: scaleplay.TimeBoxConfig, lambda: dict(budget_s=1.0, cache_latency_s=0.0)),
    Entry(
        "Fault",
        lambda: scaleplay.Fault,
        lambda: dict(at_s=10.0, region="east", replicas="all", duration_s=None),
    ),
    Entry("Region", lambda: scaleplay.Region, lambda: dict(name="east", share=1.0, pool=None)),
    Entry(
        "RegionsConfig",
        lambda: scaleplay.RegionsConfig,
        lambda: dict(
            regions=_regions().regions, rtt_s=_regions().rtt_s, failover=True, spill_backlog=None, faults=()
        ),
    ),
    Entry(
        "BatcherConfig",
        lambda: scaleplay.BatcherConfig,
        lambda: dict(max_batch_size=4, max_wait_s=0.01, max_concurrent_batches=1),
    ),
    Entry(
        "GatewayConfig",
        lambda: scaleplay.GatewayConfig,
        lambda: dict(
            queue_capacity=None,
            rate_limit_per_s=None,
            rate_limit_burst=1,
            shed_queue_length=None,
            shed_min_priority=1,
            timeout_s=None,
        ),
    ),
    Entry(
        "IngestionConfig",
        lambda: scaleplay.IngestionConfig,
        lambda: dict(fetch_mean_s=0.01, fetch_cv=1.0, cache_hit_ratio=0.0, cache_latency_s=0.0),
    ),
    Entry(
        "PoolConfig",
        lambda: scaleplay.PoolConfig,
        lambda: dict(
            replicas=2,
            service=_service(),
            batcher=scaleplay.BatcherConfig(),
            policy="shared_queue",
            name="main",
            autoscaler=None,
        ),
    ),
    Entry(
        "PlatformConfig",
        lambda: scaleplay.PlatformConfig,
        lambda: dict(
            pool=_pool(),
            gateway=scaleplay.GatewayConfig(),
            ingestion=None,
            network_hop_s=0.0,
            cascade=None,
            timebox=None,
            modes=None,
            overflow=None,
            regions=None,
        ),
    ),
    Entry(
        "ModelOption",
        lambda: scaleplay.ModelOption,
        lambda: dict(
            name="o",
            service=_service(),
            usd_per_replica_hour=1.0,
            gpus_per_replica=1,
            tier="",
            quantization="",
            hardware="",
        ),
    ),
    Entry(
        "Prices",
        lambda: scaleplay.Prices,
        lambda: dict(
            hardware="H100 SXM",
            on_demand_usd_per_gpu_hour=3.0,
            reserved_discount=0.3,
            spot_discount=0.6,
            spot_interruptions_per_hour=0.1,
            spot_replacement_s=60.0,
            serverless_usd_per_gpu_s=0.001,
            serverless_usd_per_request=0.0,
            egress_usd_per_gb=0.05,
            storage_usd_per_gb_month=0.02,
        ),
    ),
    Entry("load_prices", lambda: scaleplay.load_prices, lambda: dict(hardware="H100 SXM")),
    Entry(
        "roofline_option",
        lambda: scaleplay.roofline_option,
        lambda: dict(
            model="Llama-3.1-8B",
            dtype="bf16",
            hardware="H100 SXM",
            tensor_parallel=1,
            usd_per_gpu_hour=None,
            purchase="on_demand",
            kv_dtype="bf16",
            name=None,
        ),
    ),
    Entry(
        "monthly_bill",
        lambda: scaleplay.monthly_bill,
        lambda: dict(
            fleet=2.0,
            prices=scaleplay.load_prices(),
            requests_per_month=1e6,
            reserved_gpus=0,
            spot_share=0.0,
            egress_bytes_per_request=0.0,
            storage_gb=0.0,
        ),
    ),
    Entry(
        "unit_costs",
        lambda: scaleplay.unit_costs,
        lambda: dict(
            bill=scaleplay.monthly_bill(2.0, scaleplay.load_prices(), requests_per_month=1e6),
            requests_per_month=1e6,
            monthly_active_users=None,
        ),
    ),
    Entry(
        "run_cost",
        lambda: scaleplay.run_cost,
        lambda: dict(
            result=_result(), prices=scaleplay.load_prices(), gpus_per_replica=1, purchase="on_demand"
        ),
    ),
    Entry(
        "fifo_waits_s",
        lambda: scaleplay.fifo_waits_s,
        lambda: dict(arrival_times_s=[0.0, 1.0, 2.0], service_times_s=[0.5, 0.5, 0.5], servers=1),
    ),
    Entry(
        "mmc_replications",
        lambda: scaleplay.mmc_replications,
        lambda: dict(
            arrival_rate_per_s=1.0,
            service_rate_per_s=2.0,
            servers=1,
            customers=100,
            replications=2,
            seed=0,
            warmup_share=0.1,
        ),
    ),
    Entry("seed_sequence", lambda: scaleplay.seed_sequence, lambda: dict(seed=0, name="a", replication=0)),
    Entry("stream", lambda: scaleplay.stream, lambda: dict(seed=0, name="a", replication=0)),
    Entry(
        "simulate",
        lambda: scaleplay.simulate,
        lambda: dict(
            arrivals=_arrivals(),
            config=scaleplay.PlatformConfig(pool=_pool()),
            seed=0,
            horizon_s=None,
            timeline_step_s=1.0,
            progress=False,
        ),
        deadline_s=1.0,
    ),
    Entry(
        "summarize",
        lambda: scaleplay.summarize,
        lambda: dict(log=_result().log, timeline=_result().timeline, slo_s=1.0, horizon_s=None),
    ),
    Entry(
        "latency_percentiles",
        lambda: scaleplay.latency_percentiles,
        lambda: dict(log=_result().log, quantiles=(0.5, 0.99), by=None),
    ),
    Entry(
        "stage_breakdown",
        lambda: scaleplay.stage_breakdown,
        lambda: dict(log=_result().log, quantiles=(0.5, 0.99)),
    ),
    Entry(
        "evaluate_alerts",
        lambda: scaleplay.evaluate_alerts,
        lambda: dict(
            log=_result().log,
            slo=scaleplay.SLO(1.0),
            step_s=60.0,
            horizon_s=None,
            before_run="clean",
            requests_per_period=None,
        ),
    ),
    Entry(
        "region_report",
        lambda: scaleplay.region_report,
        lambda: dict(result=_region_results()[1], slo=scaleplay.SLO(1.0), step_s=60.0),
    ),
    Entry(
        "fault_impact",
        lambda: scaleplay.fault_impact,
        lambda: dict(
            faulty=_region_results()[0], baseline=_region_results()[1], slo=scaleplay.SLO(1.0), step_s=60.0
        ),
    ),
    Entry(
        "plan",
        lambda: scaleplay.plan,
        lambda: dict(
            workload=_arrivals(),
            options=[scaleplay.ModelOption("o", _service(), 1.0)],
            slo_s=5.0,
            seed=0,
            quantile=0.99,
            max_rejected_share=0.01,
            batch_sizes=(2,),
            max_replicas=2,
            template=None,
            duration_s=10.0,
            start_s=None,
            replications=1,
            common_seed=True,
            max_rounds=2,
            executor=_THREADS,
            max_workers=None,
            progress=False,
        ),
        deadline_s=4.0,
    ),
]

#: Cases that fail in modules owned elsewhere: (entry, field) -> the failing value and exception,
#: each a strict xfail for the owner to fix ("owner: ..." says whose).
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


# ---- the fuzz test -------------------------------------------------------------------------------


def _cases() -> Iterator[object]:
    for entry in ENTRIES:
        try:
            fields = entry.fields or tuple(entry.kwargs())
        except Exception as error:  # a broken valid call is a case of its own (test_valid_calls_succeed)
            fields = (f"<kwargs: {type(error).__name__}>",)
        for name in fields:
            marks = []
            reason = KNOWN_FAILURES.get((entry.name, name))
            if reason is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            yield pytest.param(entry, name, id=f"{entry.name}-{name}", marks=marks)


class Hang(Exception):
    """A call ran longer than ``HANG_FACTOR`` x its deadline."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang("the call ran past its deadline: a hang")


@pytest.fixture(scope="module", autouse=True)
def _bounded_memory_and_time() -> Iterator[None]:
    """Cap the address space (so a huge allocation fails rather than swaps) and arm the hang alarm."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * resource.getpagesize()
    cap = used + MEMORY_BYTES
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        yield
    finally:
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _call(entry: Entry, name: str, value: object) -> None:
    """Substitute ``value`` for argument ``name``; a result or a ValueError/TypeError naming it."""
    kwargs = entry.kwargs()
    kwargs[name] = value
    target = entry.call()
    signal.setitimer(signal.ITIMER_REAL, HANG_FACTOR * entry.deadline_s)
    expected = entry.names.get(name, name)
    try:
        out = target(**kwargs)
    except (ValueError, TypeError, OSError) as error:
        message = str(error)
        shown = name in entry.paths and isinstance(value, str) and _show(value)[1:-1][:20] in message
        if isinstance(error, OSError):  # a missing file, say: only for arguments that name one
            assert shown, f"{entry.name}({name}={_show(value)}): {type(error).__name__}: {message}"
        assert expected in message or shown, (
            f"{entry.name}({name}={_show(value)}): the message does not name {expected!r}: {message}"
        )
        assert len(message) < 2000, (
            f"{entry.name}({name}={_show(value)}): a message of {len(message):,} chars"
        )
        return
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    del out  # any result is fine: the value was usable


def _with_fixed_examples(test: Callable) -> Callable:
    for value in reversed(FIXED):
        test = example(value=value)(test)
    return test


@pytest.mark.parametrize("entry", [pytest.param(entry, id=entry.name) for entry in ENTRIES])
def test_valid_calls_succeed(entry: Entry) -> None:
    """The table's own arguments are valid (else the fuzz cases below would prove nothing)."""
    entry.call()(**entry.kwargs())


@pytest.mark.parametrize(("entry", "name"), list(_cases()))
@settings(
    max_examples=6,
    deadline=None,  # per entry instead: the alarm in _call (HANG_FACTOR x deadline_s)
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    report_multiple_bugs=False,
)
@_with_fixed_examples
@given(value=HOSTILE)
def test_hostile_value_is_refused_by_name_or_accepted(entry: Entry, name: str, value: object) -> None:
    _call(entry, name, value)
