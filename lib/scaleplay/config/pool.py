"""A pool of identical model servers: how many, their service-time curve, their batcher, the balancer."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._validate import (
    MAX_REPLICAS,
    MAX_TOKENS,
    _kind,
    _show,
    check_in,
    check_int,
    check_range,
    check_seconds,
)
from ..profiles import MAX_BATCH_SIZE, ServiceTime
from ..speculative import SpeculativeStepTime
from ..steptime import ExponentialStepTime, StepTimeModel
from ._fields import _set
from .autoscaler import AutoscalerConfig

__all__ = [
    "CONTINUOUS_POLICIES",
    "POLICIES",
    "RESERVED_NAMES",
    "SCHEDULES",
    "BatcherConfig",
    "ContinuousBatcherConfig",
    "PoolConfig",
]

#: Names a pool cannot take: the log's ``model`` column uses them for answers no pool gave.
RESERVED_NAMES: tuple[str, ...] = ("cache", "human")

#: How a pool hands requests to its replicas.
POLICIES: tuple[str, ...] = (
    "shared_queue",
    "round_robin",
    "join_shortest_queue",
    "power_of_two",
    "least_outstanding_tokens",
    "least_kv_cache",
    "prefix_affinity",
)

#: Policies that read a replica's KV cache, so only a continuous-batching pool (``ContinuousBatcherConfig``)
#: may have them (``"prefix_affinity"`` also needs its ``prefix_caching``).
CONTINUOUS_POLICIES: tuple[str, ...] = ("least_kv_cache", "prefix_affinity")

#: The most ``PoolConfig.affinity_slack`` may be: beyond it the load cap no longer binds.
MAX_AFFINITY_SLACK = 100.0

#: What a continuous batcher's iteration serves first (``ContinuousBatcherConfig.schedule``).
SCHEDULES: tuple[str, ...] = ("decode_first", "prefill_first")


@dataclass(frozen=True)
class BatcherConfig:
    """The dynamic batcher of each replica: batch size cap, how long to wait for company, slots."""

    max_batch_size: int = 1
    max_wait_s: float = 0.0
    max_concurrent_batches: int = 1

    def __post_init__(self) -> None:
        _set(
            self,
            "max_batch_size",
            check_int("max_batch_size", self.max_batch_size, minimum=1, maximum=MAX_BATCH_SIZE),
        )
        _set(self, "max_wait_s", check_seconds("max_wait_s", self.max_wait_s))
        _set(
            self,
            "max_concurrent_batches",
            check_int("max_concurrent_batches", self.max_concurrent_batches, minimum=1, maximum=1024),
        )


@dataclass(frozen=True)
class ContinuousBatcherConfig:
    """Iteration-level scheduling, as vLLM, SGLang and TensorRT-LLM do (``sim.continuous``).

    Each iteration runs one decode token for every running sequence plus prompt tokens of waiting
    requests, at most ``max_num_seqs`` sequences and ``max_batched_tokens`` tokens in the pass. The KV
    cache holds ``gpu_memory_utilization`` of the GPUs' memory less the weights, in blocks of
    ``block_tokens`` tokens; a request is admitted only when its prompt's blocks fit, and when a
    running sequence needs a block that is not there, the newest running request is preempted (its
    blocks freed, its tokens recomputed when it comes back).

    ``schedule``:

    - ``"decode_first"`` (vLLM V1, Sarathi-Serve; chunked prefill): the running sequences' decode
      tokens go first, then prompt chunks fill what is left of the token budget, so a long prompt is
      split across iterations and never stalls the decodes;
    - ``"prefill_first"`` (vLLM V0's default): while a waiting prompt fits, the iteration prefills
      whole prompts only and the decodes wait. A preempted request recomputes its prompt and answer
      so far in one iteration, so a request whose prompt and answer exceed ``max_batched_tokens``
      could be stuck and is rejected as ``"too_long"`` (vLLM V0 asks ``max_num_batched_tokens >=
      max_model_len`` for the same reason).

    ``prefix_caching`` (vLLM's automatic prefix caching, ``sim.prefix``): each replica keeps the prompt
    blocks it has computed, ``prefix_block_tokens`` tokens each, named by the arrivals' ``prefix_blocks``
    hashes (``trace.load_mooncake_trace`` gives them, 512 tokens a block); a new request skips the
    prefill of the leading blocks the replica still holds. Off, nothing changes.

    ``max_paddings`` (vLLM V0's flag of that name; ``"prefill_first"`` only, no prefix caching): V0 pads
    the prompts of a prefill iteration to the longest of them, so the pass computes prompts x longest
    tokens, the token budget counts them so, and a prompt joins the iteration only while the padding
    stays within ``max_paddings`` tokens. None (the default) pads nothing.

    ``kv_cache_blocks``: the KV cache's size in blocks when the server states it (vLLM logs ``# GPU
    blocks`` when it starts, after profiling its activations); None (the default) derives it from
    ``gpu_memory_utilization`` and the weights.
    """

    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    block_tokens: int = 16
    gpu_memory_utilization: float = 0.9
    schedule: str = "decode_first"
    prefix_caching: bool = False
    prefix_block_tokens: int = 512
    max_paddings: int | None = None
    kv_cache_blocks: int | None = None

    def __post_init__(self) -> None:
        _set(
            self,
            "max_num_seqs",
            check_int("max_num_seqs", self.max_num_seqs, minimum=1, maximum=MAX_BATCH_SIZE),
        )
        _set(
            self,
            "max_batched_tokens",
            check_int("max_batched_tokens", self.max_batched_tokens, minimum=1, maximum=MAX_TOKENS),
        )
        if self.max_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_batched_tokens must be at least max_num_seqs ({self.max_num_seqs}), so that every "
                f"running sequence's decode token fits in an iteration; got {self.max_batched_tokens}"
            )
        _set(self, "block_tokens", check_int("block_tokens", self.block_tokens, minimum=1, maximum=1 << 20))
        _set(
            self,
            "gpu_memory_utilization",
            check_range("gpu_memory_utilization", self.gpu_memory_utilization, 1e-6, 1.0),
        )
        check_in("schedule", self.schedule, SCHEDULES)
        if not isinstance(self.prefix_caching, bool):
            raise TypeError(f"prefix_caching must be True or False, got {_kind(self.prefix_caching)}")
        _set(
            self,
            "prefix_block_tokens",
            check_int("prefix_block_tokens", self.prefix_block_tokens, minimum=1, maximum=MAX_TOKENS),
        )
        if self.max_paddings is not None:
            _set(
                self,
                "max_paddings",
                check_int("max_paddings", self.max_paddings, minimum=0, maximum=MAX_TOKENS),
            )
            if self.schedule != "prefill_first" or self.prefix_caching:
                raise ValueError(
                    f"max_paddings={self.max_paddings} pads whole prompts, as vLLM V0 does: it needs "
                    f"schedule='prefill_first' and no prefix_caching, got schedule={self.schedule!r} and "
                    f"prefix_caching={self.prefix_caching}"
                )
        if self.kv_cache_blocks is not None:
            _set(
                self,
                "kv_cache_blocks",
                check_int("kv_cache_blocks", self.kv_cache_blocks, minimum=1, maximum=MAX_TOKENS),
            )

    def kv_blocks(self, step: StepTimeModel | SpeculativeStepTime | ExponentialStepTime) -> int:
        """Blocks of KV cache on ``step``'s GPUs: ``kv_cache_blocks`` when stated, else the memory this
        batcher may use, less the weights (an ``ExponentialStepTime`` states its capacity; a
        ``SpeculativeStepTime`` holds the draft's weights and KV too)."""
        if self.kv_cache_blocks is not None:
            if not isinstance(step, StepTimeModel):
                raise ValueError(
                    f"kv_cache_blocks={self.kv_cache_blocks} states the cache of StepTimeModel replicas; "
                    f"a {type(step).__name__} sizes its own (leave kv_cache_blocks None)"
                )
            cache_bytes = self.kv_cache_blocks * self.block_tokens * step.model.kv_bytes_per_token
            if cache_bytes + step.model.weight_bytes > step.memory_bytes:
                raise ValueError(
                    f"kv_cache_blocks={self.kv_cache_blocks} ({cache_bytes / 1e9:.1f} GB) and "
                    f"{step.model.name}'s {step.model.weight_bytes / 1e9:.1f} GB of weights do not fit "
                    f"{step.tensor_parallel} x {step.hardware.name} ({step.memory_bytes / 1e9:.1f} GB)"
                )
            return self.kv_cache_blocks
        if isinstance(step, ExponentialStepTime):
            return max(step.kv_capacity_tokens // self.block_tokens, 1)
        if isinstance(step, SpeculativeStepTime):
            return step.kv_blocks(self.gpu_memory_utilization, self.block_tokens)
        if not isinstance(step, StepTimeModel):
            raise TypeError(
                "service must be a StepTimeModel (or a SpeculativeStepTime or an ExponentialStepTime) with a "
                "continuous batcher, "
                f"got {_kind(step)}"
            )
        free_bytes = step.memory_bytes * self.gpu_memory_utilization - step.model.weight_bytes
        blocks = (
            int(free_bytes // (step.model.kv_bytes_per_token * self.block_tokens)) if free_bytes > 0 else 0
        )
        if blocks < 1:
            raise ValueError(
                f"gpu_memory_utilization={_show(self.gpu_memory_utilization)} of {step.tensor_parallel} x "
                f"{step.hardware.name} ({step.memory_bytes * self.gpu_memory_utilization / 1e9:.1f} GB) "
                f"leaves no room for the KV cache after {step.model.name}'s "
                f"{step.model.weight_bytes / 1e9:.1f} GB of weights; raise gpu_memory_utilization or "
                "tensor_parallel"
            )
        return blocks


@dataclass(frozen=True)
class PoolConfig:
    """``replicas`` identical model servers with one service-time curve, a batcher and a policy.

    With an ``autoscaler``, ``replicas`` is the count at the start, within its bounds.
    ``affinity_slack`` (in ``[0, 100]``): how much busier than the least loaded replica
    ``policy="prefix_affinity"`` may pick one for its cached prefix (``sim.pool.PrefixAffinityPool``).
    """

    replicas: int
    service: ServiceTime | StepTimeModel | SpeculativeStepTime | ExponentialStepTime
    batcher: BatcherConfig | ContinuousBatcherConfig = field(default_factory=BatcherConfig)
    policy: str = "shared_queue"
    name: str = "main"
    autoscaler: AutoscalerConfig | None = None
    affinity_slack: float = 0.25

    def __post_init__(self) -> None:
        _set(self, "replicas", check_int("replicas", self.replicas, minimum=1, maximum=MAX_REPLICAS))
        if isinstance(self.batcher, ContinuousBatcherConfig):
            self.batcher.kv_blocks(self.service)  # a StepTimeModel whose KV cache has room
        elif not isinstance(self.batcher, BatcherConfig):
            raise TypeError(
                f"batcher must be a BatcherConfig or a ContinuousBatcherConfig, got {_kind(self.batcher)}"
            )
        elif not isinstance(self.service, ServiceTime):
            raise TypeError(f"service must be a ServiceTime (with batch_time_s), got {_kind(self.service)}")
        check_in("policy", self.policy, POLICIES)
        if self.policy in CONTINUOUS_POLICIES and not self.continuous:
            raise ValueError(
                f"policy={self.policy!r} balances on the KV cache, which only a continuous batcher has; "
                f"got batcher={_kind(self.batcher)}: use a ContinuousBatcherConfig or another policy"
            )
        if self.policy == "prefix_affinity" and not self.batcher.prefix_caching:
            raise ValueError(
                "policy='prefix_affinity' routes on the prefix blocks each replica has cached, which needs "
                "ContinuousBatcherConfig(prefix_caching=True); got batcher.prefix_caching=False"
            )
        _set(
            self,
            "affinity_slack",
            check_range("affinity_slack", self.affinity_slack, 0.0, MAX_AFFINITY_SLACK),
        )
        if not isinstance(self.name, str) or not self.name or self.name in RESERVED_NAMES:
            raise ValueError(
                f"name must be a non-empty string other than {', '.join(map(repr, RESERVED_NAMES))}; "
                f"got {self.name!r}"
            )
        scaler = self.autoscaler
        if scaler is not None:
            if not isinstance(scaler, AutoscalerConfig):
                raise TypeError(f"autoscaler must be an AutoscalerConfig or None, got {_kind(scaler)}")
            low = max(scaler.min_replicas, 1)
            if not low <= self.replicas <= scaler.max_replicas:
                raise ValueError(
                    f"replicas (the replicas at the start) must lie in [{low}, {scaler.max_replicas}] "
                    f"with this autoscaler, got {self.replicas!r}"
                )
            if scaler.metric == "saturation" and not self.continuous:
                raise ValueError(
                    "autoscaler metric='saturation' reads the KV cache and queues of a continuous "
                    f"batcher; got batcher={_kind(self.batcher)}: use a ContinuousBatcherConfig or "
                    "metric 'utilization' or 'concurrency'"
                )

    @property
    def continuous(self) -> bool:
        """Iteration-level scheduling (a ``ContinuousBatcherConfig``) rather than static batches."""
        return isinstance(self.batcher, ContinuousBatcherConfig)

    @property
    def max_replicas(self) -> int:
        """The most replicas this pool can ever have (its autoscaler's ceiling, else ``replicas``)."""
        return self.replicas if self.autoscaler is None else self.autoscaler.max_replicas
