"""The workload: from users to an arrivals table.

A ``Workload`` turns a product's numbers into a request rate and then into requests:

- **Mean rate**: ``daily_active_users x requests_per_user_per_day / 86 400`` requests per second.
- **Shape**: the mean times a **diurnal** factor (``DiurnalCosine``, a raised cosine with a chosen
  peak-to-mean ratio, or ``DiurnalHourly``, a 24-point curve interpolated smoothly and periodically),
  a **weekly** factor (7 multipliers, one per day, normalised to mean 1) and **bursts**
  (``Burst(start_s, duration_s, multiplier)``: a launch, a flash crowd, an outage at 0).
  Diurnal and weekly factors have mean 1, so ``mean_rate_per_s`` is the long-run mean without
  bursts and ``requests_per_day`` is what the users ask for on an average day.
- **Arrivals**: a non-homogeneous Poisson process with that intensity (``interarrival_cv=1``,
  generated exactly by thinning), or a burstier (``interarrival_cv > 1``) or smoother renewal
  process time-changed by the same intensity (see ``generate_arrivals``).
- **Requests**: each arrival picks a ``TrafficClass`` by its share; the class sets its priority,
  the distributions of its prompt and output sizes (``TokenDistribution``) and of its difficulty
  (``Difficulty``).

**The workload clock.** ``rate_per_s(t)`` takes seconds on the workload clock: ``t = 0`` is midnight
at the start of day 0, which is ``weekly[0]``'s day; hour of day is ``(t mod 86 400) / 3600``. Burst
start times are on this clock too. ``generate_arrivals(workload, duration_s, seed=..., start_s=...)``
covers the window ``[start_s, start_s + duration_s)`` of this clock and reports each arrival as
``t_s`` = seconds from the start of the run (``t_s = clock - start_s``), as every table in the
library does. ``start_s = 9 * 3600`` starts a run at 09:00 on day 0.

**Random streams.** Arrival times, class choices, and each class's prompt sizes, output sizes and
difficulties come from separate named streams of the run's seed (``scaleplay.rng.stream``), so
changing a size distribution never moves an arrival time, and changing one class's sizes never
changes another's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from ._validate import (
    MAX_PRIORITY,
    MAX_SEED,
    MAX_TOKENS,
    _kind,
    _show,
    check_finite,
    check_in,
    check_int,
    check_items,
    check_numbers,
    check_positive,
    check_range,
)
from .rng import stream
from .schema import ARRIVAL_COLUMNS

__all__ = [
    "SECONDS_PER_HOUR",
    "SECONDS_PER_DAY",
    "SECONDS_PER_WEEK",
    "MAX_TOKENS",
    "MAX_PRIORITY",
    "MAX_SIGMA",
    "MAX_CLOCK_S",
    "MAX_RATE_PER_S",
    "MAX_BURST_MULTIPLIER",
    "MAX_EXPECTED_ARRIVALS",
    "INTERARRIVAL_CV_RANGE",
    "TokenDistribution",
    "Difficulty",
    "TrafficClass",
    "DiurnalProfile",
    "DiurnalCosine",
    "DiurnalHourly",
    "FLAT",
    "Burst",
    "Workload",
    "generate_arrivals",
]

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86_400.0
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY

#: Tolerance on the sum of the class shares.
SHARE_TOLERANCE = 1e-6
#: The largest log-sd of a token distribution (a 99th percentile 10^10 times the median).
MAX_SIGMA = 10.0
#: The workload clock ends here: burst ends and the end of a generated window (about 31.7 years).
MAX_CLOCK_S = 1e9
#: The highest arrival rate a workload may reach at its peak (bursts included).
MAX_RATE_PER_S = 1e9
#: The largest burst multiplier.
MAX_BURST_MULTIPLIER = 1e4
#: The most arrivals ``generate_arrivals`` may expect in one window (a table of about 6 GB).
MAX_EXPECTED_ARRIVALS = 10**8
#: The allowed inter-arrival coefficients of variation.
INTERARRIVAL_CV_RANGE = (0.01, 100.0)
# Pieces of the window are cut at every half hour (the knots of DiurnalHourly and the hour marks),
# at midnights and at burst edges; within a piece the weekly and burst factors are constant.
_PIECE_S = 1800.0
# Thinning: the most candidates expected in one piece (longer pieces are split, which also
# tightens the bound), and the most candidates handled at once.
_MAX_CANDIDATES_PER_PIECE = 65_536
_CHUNK_CANDIDATES = 1 << 20
# Renewal option: arrival times are solved to within this many hours (about 0.4 microseconds).
_SOLVE_TOL_H = 1e-10


def _exp_g(log_value: float) -> str:
    """``exp(log_value)`` written with ``:g``, even beyond the largest float."""
    if log_value < 700:
        return f"{math.exp(log_value):g}"
    return f"1e{log_value / math.log(10):.0f}"


# --------------------------------------------------------------------------------------------------
# Request sizes and difficulty
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenDistribution:
    """Token counts from a lognormal: ``round(median x exp(sigma x Z))``, at least 1, at most ``maximum``.

    ``sigma`` is the standard deviation of the log (0 gives the median every time), at most
    ``MAX_SIGMA`` = 10. Values above ``maximum`` are set to ``maximum``, as a ``max_tokens`` limit
    does; ``median`` and ``maximum`` are at most ``MAX_TOKENS`` = 10**9, the cap when ``maximum`` is
    ``None``, so every count fits an int64. Draws are monotone in the
    underlying normal ``Z``, so with the same seed a larger median gives every request at least as
    many tokens (common random numbers across designs).

    >>> import numpy as np
    >>> TokenDistribution(100, 0.0).sample(np.random.default_rng(0), 3).tolist()
    [100, 100, 100]
    """

    median: float
    sigma: float = 0.0
    maximum: int | None = None

    def __post_init__(self) -> None:
        median = check_range("median", self.median, 0.0, MAX_TOKENS, open_low=True, unit=" tokens")
        object.__setattr__(self, "median", median)
        object.__setattr__(self, "sigma", check_range("sigma", self.sigma, 0.0, MAX_SIGMA))
        if self.maximum is not None:
            maximum = check_int("maximum", self.maximum, minimum=1, maximum=MAX_TOKENS)
            object.__setattr__(self, "maximum", maximum)

    @property
    def mean_tokens(self) -> float:
        """Mean of the lognormal before rounding and the cap: ``median x exp(sigma^2 / 2)``."""
        return self.median * math.exp(self.sigma**2 / 2)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` draws as an int64 array, each in [1, ``maximum``] (``MAX_TOKENS`` without one)."""
        z = rng.standard_normal(size)
        x = self.median * np.exp(self.sigma * z)  # at most 1e9 x exp(10 x 40): finite
        upper = float(self.maximum) if self.maximum is not None else float(MAX_TOKENS)
        return np.clip(np.rint(x), 1.0, upper).astype(np.int64)


@dataclass(frozen=True)
class Difficulty:
    """Per-request difficulty in [0, 1] from a Beta(``alpha``, ``beta``); the default is uniform.

    With the uniform default, a cascade whose small model handles requests of difficulty below
    ``x`` sends a share ``x`` of the traffic to the small model.
    """

    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_positive("alpha", self.alpha))
        object.__setattr__(self, "beta", check_positive("beta", self.beta))

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.beta(self.alpha, self.beta, size)


# Defaults fitted to the Azure LLM inference trace 2023, conversation service (Patel et al.,
# ISCA 2024, CC-BY 4.0): prompt median 1020 tokens, log-sd 0.99; output median 129, log-sd 0.86,
# capped at 1000.
DEFAULT_TOKENS_IN = TokenDistribution(median=1020, sigma=0.99)
DEFAULT_TOKENS_OUT = TokenDistribution(median=129, sigma=0.86, maximum=1000)


@dataclass(frozen=True)
class TrafficClass:
    """A kind of request: its share of arrivals, its priority (0 = most important, at most
    ``MAX_PRIORITY`` = 10**6) and its sizes."""

    name: str
    share: float
    priority: int = 0
    tokens_in: TokenDistribution = DEFAULT_TOKENS_IN
    tokens_out: TokenDistribution = DEFAULT_TOKENS_OUT
    difficulty: Difficulty = field(default_factory=Difficulty)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"TrafficClass name must be a non-empty string, got {_kind(self.name)}")
        share = check_finite("share", self.share)
        if not 0 < share <= 1:
            raise ValueError(f"share of class {_show(self.name)} must lie in (0, 1], got {_show(self.share)}")
        object.__setattr__(self, "share", share)
        priority = check_int("priority", self.priority, minimum=0, maximum=MAX_PRIORITY)
        object.__setattr__(self, "priority", priority)
        for name, kind in (
            ("tokens_in", TokenDistribution),
            ("tokens_out", TokenDistribution),
            ("difficulty", Difficulty),
        ):
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {_kind(value)}")


# --------------------------------------------------------------------------------------------------
# Time-of-day profiles
# --------------------------------------------------------------------------------------------------


class DiurnalProfile(Protocol):
    """A factor of mean 1 over the 24 hours of a day, as a function of hours on the workload clock."""

    @property
    def peak(self) -> float: ...

    def factor(self, hours: np.ndarray) -> np.ndarray: ...

    def cumulative(self, hours: np.ndarray) -> np.ndarray: ...

    def max_between(self, h0: np.ndarray, h1: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class DiurnalCosine:
    """A raised cosine over 24 h: ``1 + (peak_to_mean - 1) cos(2 pi (h - peak_hour) / 24)``.

    Its mean is 1, its peak ``peak_to_mean`` at ``peak_hour`` and its trough ``2 - peak_to_mean``
    twelve hours later, so ``peak_to_mean`` must lie in [1, 2] (1 is flat); for a sharper day give
    the 24 hourly levels to ``DiurnalHourly``. The default (1.5x at 14:00, 0.5x at 02:00) is a
    plausible consumer-chat day.
    """

    peak_to_mean: float = 1.5
    peak_hour: float = 14.0

    def __post_init__(self) -> None:
        ratio = check_finite("peak_to_mean", self.peak_to_mean)
        if not 1 <= ratio <= 2:
            raise ValueError(
                f"peak_to_mean must lie in [1, 2] for a raised cosine (its trough is 2 - peak_to_mean), "
                f"got {_show(self.peak_to_mean)}; use DiurnalHourly for a sharper day"
            )
        object.__setattr__(self, "peak_to_mean", ratio)
        object.__setattr__(self, "peak_hour", check_finite("peak_hour", self.peak_hour) % 24.0)

    @property
    def peak(self) -> float:
        return self.peak_to_mean

    def factor(self, hours: np.ndarray) -> np.ndarray:
        hours = np.asarray(hours, dtype=float)
        return 1.0 + (self.peak_to_mean - 1.0) * np.cos(2 * np.pi * (hours - self.peak_hour) / 24.0)

    def cumulative(self, hours: np.ndarray) -> np.ndarray:
        """``integral_0^h factor`` in hours (the day integrates to 24)."""
        hours = np.asarray(hours, dtype=float)
        amp = (self.peak_to_mean - 1.0) * 24.0 / (2 * np.pi)
        phase = 2 * np.pi / 24.0
        return hours + amp * (np.sin(phase * (hours - self.peak_hour)) - np.sin(-phase * self.peak_hour))

    def max_between(self, h0: np.ndarray, h1: np.ndarray) -> np.ndarray:
        """Exact maximum over each ``[h0, h1]`` (intervals shorter than a day)."""
        h0 = np.asarray(h0, dtype=float)
        h1 = np.asarray(h1, dtype=float)
        mid = 0.5 * (h0 + h1)
        nearest_peak = self.peak_hour + 24.0 * np.round((mid - self.peak_hour) / 24.0)
        inside = (nearest_peak >= h0) & (nearest_peak <= h1)
        ends = np.maximum(self.factor(h0), self.factor(h1))
        return np.where(inside, self.peak_to_mean, ends)


#: A flat day (factor 1 at every hour).
FLAT = DiurnalCosine(peak_to_mean=1.0)


@dataclass(frozen=True)
class DiurnalHourly:
    """A day given as 24 hourly levels, interpolated smoothly and periodically.

    ``values[i]`` is the level at the middle of hour ``i`` (``i:30``); any positive scale works:
    the levels are normalised so that the curve has mean 1 (``values`` is stored normalised). The
    curve through them is a periodic monotone cubic (PCHIP, Fritsch-Butland slopes): smooth (C1),
    it never overshoots the levels, so it stays non-negative and its peak is ``max(values)``; its
    integral over the day is exactly ``sum(values)`` hours, so the normalised curve has mean 1.
    """

    values: tuple[float, ...]
    _slopes: np.ndarray = field(init=False, repr=False, compare=False)
    _seg_start: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        y = np.asarray(check_numbers("values", self.values, size=24))
        if not np.all(np.isfinite(y)) or np.any(y < 0):
            raise ValueError(f"values must be 24 finite levels >= 0, got {_show(self.values)}")
        if y.max() <= 0:
            raise ValueError(f"values must not all be 0, got {_show(self.values)}")
        y = y / y.max()  # first to [0, 1], so that no sum overflows
        y = y * (24.0 / y.sum())
        d = np.roll(y, -1) - y  # d[j] = y[j+1] - y[j], periodic
        d_prev = np.roll(d, 1)
        same_sign = d_prev * d > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.where(same_sign, 2.0 * d_prev * d / (d_prev + d), 0.0)
        seg_int = (y + np.roll(y, -1)) / 2.0 + (m - np.roll(m, -1)) / 12.0
        object.__setattr__(self, "values", tuple(y.tolist()))
        object.__setattr__(self, "_slopes", m)
        object.__setattr__(self, "_seg_start", np.concatenate(([0.0], np.cumsum(seg_int)[:-1])))

    @property
    def peak(self) -> float:
        return max(self.values)

    def _segment(self, hours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.asarray(hours, dtype=float) - 0.5  # knots at j + 0.5 become integers
        days = np.floor(s / 24.0)
        r = s - 24.0 * days
        j = np.minimum(np.floor(r).astype(np.int64), 23)
        return days, j, r - j

    def factor(self, hours: np.ndarray) -> np.ndarray:
        _, j, u = self._segment(hours)
        y = np.asarray(self.values)
        y0, y1 = y[j], y[(j + 1) % 24]
        m0, m1 = self._slopes[j], self._slopes[(j + 1) % 24]
        u2, u3 = u * u, u * u * u
        return y0 * (2 * u3 - 3 * u2 + 1) + m0 * (u3 - 2 * u2 + u) + y1 * (-2 * u3 + 3 * u2) + m1 * (u3 - u2)

    def _g(self, s_hours: np.ndarray) -> np.ndarray:
        days, j, u = self._segment(np.asarray(s_hours, dtype=float) + 0.5)
        y = np.asarray(self.values)
        y0, y1 = y[j], y[(j + 1) % 24]
        m0, m1 = self._slopes[j], self._slopes[(j + 1) % 24]
        u2, u3, u4 = u * u, u**3, u**4
        partial = (
            y0 * (u4 / 2 - u3 + u)
            + m0 * (u4 / 4 - 2 * u3 / 3 + u2 / 2)
            + y1 * (-u4 / 2 + u3)
            + m1 * (u4 / 4 - u3 / 3)
        )
        return 24.0 * days + self._seg_start[j] + partial

    def cumulative(self, hours: np.ndarray) -> np.ndarray:
        """``integral_0^h factor`` in hours (the day integrates to 24)."""
        hours = np.asarray(hours, dtype=float)
        return self._g(hours - 0.5) - self._g(np.array(-0.5))

    def max_between(self, h0: np.ndarray, h1: np.ndarray) -> np.ndarray:
        """Exact maximum over each ``[h0, h1]`` that lies between two knots (monotone there)."""
        return np.maximum(self.factor(h0), self.factor(h1))


# --------------------------------------------------------------------------------------------------
# Bursts and the workload
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    """The rate times ``multiplier`` on ``[start_s, start_s + duration_s)`` of the workload clock.

    Overlapping bursts multiply. ``multiplier`` 0 models an outage upstream (no arrivals); it is at
    most ``MAX_BURST_MULTIPLIER`` = 10**4. The burst ends by ``MAX_CLOCK_S`` = 1e9 s (31.7 years).
    """

    start_s: float
    duration_s: float
    multiplier: float

    def __post_init__(self) -> None:
        start = check_range("start_s", self.start_s, 0.0, MAX_CLOCK_S, unit=" s")
        duration = check_range("duration_s", self.duration_s, 0.0, MAX_CLOCK_S, open_low=True, unit=" s")
        if start + duration > MAX_CLOCK_S:
            raise ValueError(
                f"start_s + duration_s must be <= {MAX_CLOCK_S:g} s (the end of the workload clock), "
                f"got {start:g} + {duration:g}"
            )
        object.__setattr__(self, "start_s", start)
        object.__setattr__(self, "duration_s", duration)
        multiplier = check_range("multiplier", self.multiplier, 0.0, MAX_BURST_MULTIPLIER)
        object.__setattr__(self, "multiplier", multiplier)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


_RENEWALS = ("gamma", "hyperexponential")


@dataclass(frozen=True)
class Workload:
    """Users, their traffic's shape and its classes; see the module docstring.

    ``interarrival_cv`` is the coefficient of variation of the gaps between arrivals at a steady
    rate: 1 is Poisson; above 1 is burstier (the Azure code trace reaches about 13), below 1
    smoother. ``renewal`` picks the gap distribution when it is not 1:

    - ``"gamma"`` (the default; any CV > 0): at CV >> 1 most gaps are nearly 0, so requests come in
      clumps separated by long silences (at CV 13 about 85% of gaps are below 1e-10 of the mean).
      At the Azure code trace's rate and CV (2.57 req/s, 13.2) its busiest minute in an hour is
      typically ~4.6x the mean minute, close to the trace's 4.2x.
    - ``"hyperexponential"`` (two exponential phases with balanced means; CV >= 1): mostly short
      gaps and rare very long silences; at the same rate and CV its busiest minute is only ~2x the
      mean, so it is the milder of the two at the minute scale.

    Bounds, so that every rate and count stays finite and every run bounded: ``interarrival_cv``
    in [0.01, 100]; the peak rate (mean x the busiest weekday x the diurnal peak x every burst
    multiplier above 1) at most ``MAX_RATE_PER_S`` = 1e9 requests per second.

    >>> w = Workload(daily_active_users=1e6, requests_per_user_per_day=20)
    >>> round(w.mean_rate_per_s, 1), round(w.peak_rate_per_s, 1)
    (231.5, 347.2)
    """

    daily_active_users: float
    requests_per_user_per_day: float
    classes: tuple[TrafficClass, ...] = (TrafficClass("default", 1.0),)
    diurnal: DiurnalProfile = field(default_factory=DiurnalCosine)
    weekly: tuple[float, ...] = (1.0,) * 7
    bursts: tuple[Burst, ...] = ()
    interarrival_cv: float = 1.0
    renewal: str = "gamma"

    def __post_init__(self) -> None:
        users = check_positive("daily_active_users", self.daily_active_users)
        per_user = check_positive("requests_per_user_per_day", self.requests_per_user_per_day)
        object.__setattr__(self, "daily_active_users", users)
        object.__setattr__(self, "requests_per_user_per_day", per_user)
        classes = check_items("classes", self.classes, TrafficClass)
        if not classes:
            raise ValueError("classes must hold at least one TrafficClass, got none")
        names = [c.name for c in classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {_show(names)}")
        total = math.fsum(c.share for c in classes)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            listed = ", ".join(f"{c.name}={c.share:g}" for c in classes)
            raise ValueError(
                f"class shares must sum to 1 (within {SHARE_TOLERANCE:g}); got {listed} (sum {total:g})"
            )
        object.__setattr__(self, "classes", classes)
        if not isinstance(self.diurnal, DiurnalCosine | DiurnalHourly):
            raise TypeError(f"diurnal must be a DiurnalCosine or DiurnalHourly, got {_kind(self.diurnal)}")
        weekly = np.asarray(check_numbers("weekly", self.weekly, size=7))
        if not np.all(np.isfinite(weekly)) or np.any(weekly < 0) or weekly.max() <= 0:
            raise ValueError(
                f"weekly must hold 7 finite multipliers >= 0, not all 0, got {_show(self.weekly)}"
            )
        weekly = weekly / weekly.max()  # first to [0, 1], so that no sum overflows
        object.__setattr__(self, "weekly", tuple((weekly * (7.0 / weekly.sum())).tolist()))
        object.__setattr__(self, "bursts", check_items("bursts", self.bursts, Burst))
        low, high = INTERARRIVAL_CV_RANGE
        cv = check_range("interarrival_cv", self.interarrival_cv, low, high)
        object.__setattr__(self, "interarrival_cv", cv)
        check_in("renewal", self.renewal, _RENEWALS)
        if self.renewal == "hyperexponential" and cv < 1:
            raise ValueError(
                f"interarrival_cv must be >= 1 for renewal='hyperexponential', got {cv!r}; use 'gamma'"
            )
        # The peak, in logs so that no product overflows: mean x busiest day x diurnal peak x bursts.
        log_peak = (
            math.log(users)
            + math.log(per_user)
            - math.log(SECONDS_PER_DAY)
            + math.log(max(self.weekly))
            + math.log(self.diurnal.peak)
            + math.fsum(math.log(b.multiplier) for b in self.bursts if b.multiplier > 1)
        )
        if log_peak > math.log(MAX_RATE_PER_S):
            raise ValueError(
                f"the peak rate must be <= {MAX_RATE_PER_S:g} requests/s; daily_active_users={users:g} x "
                f"requests_per_user_per_day={per_user:g} with this week, day and bursts reach about "
                f"{_exp_g(log_peak)} requests/s"
            )

    @classmethod
    def from_rate(cls, rate_per_s: float, **kwargs: object) -> Workload:
        """A workload with mean rate ``rate_per_s``, flat over the day unless ``diurnal`` is given."""
        rate = check_range("rate_per_s", rate_per_s, 0.0, MAX_RATE_PER_S, open_low=True, unit=" requests/s")
        kwargs.setdefault("diurnal", FLAT)
        return cls(daily_active_users=rate * SECONDS_PER_DAY, requests_per_user_per_day=1.0, **kwargs)

    # ---- rates -----------------------------------------------------------------------------------

    @property
    def requests_per_day(self) -> float:
        """Requests on an average day, bursts left out."""
        return self.daily_active_users * self.requests_per_user_per_day

    @property
    def mean_rate_per_s(self) -> float:
        """Long-run mean arrival rate, bursts left out."""
        return self.requests_per_day / SECONDS_PER_DAY

    def _burst_factor(self, t: np.ndarray) -> np.ndarray:
        out = np.ones_like(t, dtype=float)
        for b in self.bursts:
            out = np.where((t >= b.start_s) & (t < b.end_s), out * b.multiplier, out)
        return out

    def _level(self, t: np.ndarray) -> np.ndarray:
        """Mean rate x weekly x burst factor at ``t`` (all but the diurnal factor)."""
        day = np.floor(t / SECONDS_PER_DAY).astype(np.int64) % 7
        return self.mean_rate_per_s * np.asarray(self.weekly)[day] * self._burst_factor(t)

    def rate_per_s(self, t_s: float | np.ndarray) -> float | np.ndarray:
        """Arrival intensity at ``t_s`` seconds on the workload clock (vectorized); ``|t_s|`` at most 1e9."""
        if isinstance(t_s, bool | str | bytes | Mapping) or t_s is None:
            raise TypeError(f"t_s must be a number or an array of numbers, got {_kind(t_s)}")
        try:
            t = np.asarray(t_s, dtype=float)
        except (TypeError, ValueError, OverflowError):
            raise TypeError(f"t_s must be a number or an array of numbers, got {_kind(t_s)}") from None
        if not np.all(np.isfinite(t)) or np.any(np.abs(t) > MAX_CLOCK_S):
            raise ValueError(f"t_s must be finite, within +-{MAX_CLOCK_S:g} s, got {_show(t_s)}")
        out = self._level(t) * self.diurnal.factor(t / SECONDS_PER_HOUR)
        return float(out) if out.ndim == 0 else out

    def _pieces(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cut ``[t0, t1)`` where the level may change or the diurnal curve has a knot."""
        first = math.floor(t0 / _PIECE_S) + 1
        last = math.ceil(t1 / _PIECE_S) - 1
        marks = np.arange(first, last + 1, dtype=float) * _PIECE_S if last >= first else np.empty(0)
        edges = [b.start_s for b in self.bursts] + [b.end_s for b in self.bursts]
        edges = [e for e in edges if t0 < e < t1]
        cuts = np.unique(np.concatenate(([t0, t1], marks, np.asarray(edges, dtype=float))))
        cuts = cuts[(cuts >= t0) & (cuts <= t1)]
        a, b = cuts[:-1], cuts[1:]
        keep = b > a
        a, b = a[keep], b[keep]
        return a, b, self._level(0.5 * (a + b))

    def _window(self, start_s: float, duration_s: float) -> tuple[float, float]:
        """``[start_s, start_s + duration_s)``, ending by ``MAX_CLOCK_S``."""
        start = check_range("start_s", start_s, 0.0, MAX_CLOCK_S, unit=" s")
        duration = check_range("duration_s", duration_s, 0.0, MAX_CLOCK_S, open_low=True, unit=" s")
        if start + duration > MAX_CLOCK_S:
            raise ValueError(
                f"start_s + duration_s must be <= {MAX_CLOCK_S:g} s (the end of the workload clock), "
                f"got {start:g} + {duration:g}"
            )
        return start, start + duration

    def max_rate_per_s(self, start_s: float, duration_s: float) -> float:
        """Exact maximum of ``rate_per_s`` over ``[start_s, start_s + duration_s)``."""
        t0, t1 = self._window(start_s, duration_s)
        a, b, level = self._pieces(t0, t1)
        bound = level * self.diurnal.max_between(a / SECONDS_PER_HOUR, b / SECONDS_PER_HOUR)
        return float(bound.max())

    @property
    def peak_rate_per_s(self) -> float:
        """Highest rate at any time: over a whole week and every burst."""
        horizon = max([SECONDS_PER_WEEK] + [b.end_s for b in self.bursts])
        return self.max_rate_per_s(0.0, horizon)

    def _piece_integrals(self, a: np.ndarray, b: np.ndarray, level: np.ndarray) -> np.ndarray:
        cum = self.diurnal.cumulative
        return level * SECONDS_PER_HOUR * (cum(b / SECONDS_PER_HOUR) - cum(a / SECONDS_PER_HOUR))

    def expected_arrivals(self, start_s: float, duration_s: float) -> float:
        """``integral rate_per_s dt`` over the window: the mean number of arrivals in it."""
        t0, t1 = self._window(start_s, duration_s)
        return float(self._piece_integrals(*self._pieces(t0, t1)).sum())

    def summary(self) -> pd.Series:
        """Headline numbers: requests per day, mean and peak rate per second, peak-to-mean."""
        return pd.Series(
            {
                "requests_per_day": self.requests_per_day,
                "mean_rate_per_s": self.mean_rate_per_s,
                "peak_rate_per_s": self.peak_rate_per_s,
                "peak_to_mean": self.peak_rate_per_s / self.mean_rate_per_s,
                "interarrival_cv": self.interarrival_cv,
            },
            name="workload",
        )


# --------------------------------------------------------------------------------------------------
# Arrival times
# --------------------------------------------------------------------------------------------------


def _thinning(workload: Workload, t0: float, t1: float, rng: np.random.Generator) -> np.ndarray:
    """Non-homogeneous Poisson arrivals on ``[t0, t1)`` by thinning, piece by piece.

    On each piece a homogeneous Poisson process runs at the piece's exact maximum rate ``M``
    (count ~ Poisson(M x length), positions uniform); a candidate at ``t`` is kept with
    probability ``rate(t) / M``. Exact for any bound >= the rate; local bounds keep the rejected
    share small.
    """
    a, b, level = workload._pieces(t0, t1)
    hours = SECONDS_PER_HOUR
    # The bound is the exact maximum; the 1e-12 margin absorbs rounding in evaluating the curve.
    bound = level * workload.diurnal.max_between(a / hours, b / hours) * (1 + 1e-12)
    expected = bound * (b - a)
    split = np.maximum(1, np.ceil(expected / _MAX_CANDIDATES_PER_PIECE)).astype(np.int64)
    if np.any(split > 1):
        idx = np.repeat(np.arange(a.size), split)
        k = np.arange(idx.size) - np.repeat(np.cumsum(split) - split, split)
        width = (b - a)[idx] / split[idx]
        last = k == split[idx] - 1
        a, b, level = a[idx] + k * width, np.where(last, b[idx], a[idx] + (k + 1) * width), level[idx]
        bound = level * workload.diurnal.max_between(a / hours, b / hours) * (1 + 1e-12)
        expected = bound * (b - a)
    counts = rng.poisson(expected)
    out: list[np.ndarray] = []
    start = 0
    cum = np.cumsum(counts)
    while start < a.size:
        # The pieces [start, stop) hold at most _CHUNK_CANDIDATES candidates (at least one piece).
        base = cum[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(cum, base + _CHUNK_CANDIDATES, side="right")))
        n = counts[start:stop]
        piece = np.repeat(np.arange(start, stop), n)
        t = a[piece] + rng.random(piece.size) * (b[piece] - a[piece])
        rate = level[piece] * workload.diurnal.factor(t / hours)
        keep = rng.random(piece.size) * bound[piece] < rate
        out.append(np.sort(t[keep]))
        start = stop
    return np.concatenate(out) if out else np.empty(0)


def _renewal_gaps(workload: Workload, rng: np.random.Generator, size: int) -> np.ndarray:
    """Gaps of mean 1 and coefficient of variation ``workload.interarrival_cv``."""
    cv = workload.interarrival_cv
    if workload.renewal == "gamma":
        shape = 1.0 / cv**2
        return rng.gamma(shape, 1.0 / shape, size)
    # Balanced two-phase hyperexponential: phase i with probability p_i and mean 1 / (2 p_i).
    p1 = 0.5 * (1.0 + math.sqrt((cv**2 - 1.0) / (cv**2 + 1.0)))
    first = rng.random(size) < p1
    return rng.standard_exponential(size) * np.where(first, 0.5 / p1, 0.5 / (1.0 - p1))


def _solve_cumulative(
    diurnal: DiurnalProfile, target: np.ndarray, h: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Solve ``diurnal.cumulative(h) = target`` on brackets ``[lo, hi]`` from the guesses ``h``.

    Newton steps, with a bisection whenever a step leaves the bracket; each element stops once a
    step moves it by less than ``_SOLVE_TOL_H`` hours.
    """
    h = h.copy()
    active = np.arange(h.size)
    for _ in range(60):
        if active.size == 0:
            break
        ha, ta = h[active], target[active]
        err = diurnal.cumulative(ha) - ta
        lo_a = np.where(err <= 0, ha, lo[active])
        hi_a = np.where(err > 0, ha, hi[active])
        f = diurnal.factor(ha)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = ha - err / f
        ok = (f > 0) & (step >= lo_a) & (step <= hi_a)
        h_new = np.where(ok, step, 0.5 * (lo_a + hi_a))
        moved = np.abs(h_new - ha)
        h[active], lo[active], hi[active] = h_new, lo_a, hi_a
        active = active[(moved > _SOLVE_TOL_H) & (hi_a - lo_a > _SOLVE_TOL_H)]
    return h


def _equilibrium_gap(workload: Workload, rng: np.random.Generator) -> float:
    """The time to the first arrival of the *stationary* renewal process of unit-mean gaps.

    The forward recurrence time: a uniform fraction of a length-biased gap. A length-biased
    Gamma(k, theta) gap is Gamma(k + 1, theta); for the balanced hyperexponential each phase is
    picked with probability 1/2 and the residual is exponential with that phase's mean.
    """
    cv = workload.interarrival_cv
    if workload.renewal == "gamma":
        shape = 1.0 / cv**2
        return float(rng.random() * rng.gamma(shape + 1.0, 1.0 / shape))
    p1 = 0.5 * (1.0 + math.sqrt((cv**2 - 1.0) / (cv**2 + 1.0)))
    mean = 0.5 / p1 if rng.random() < 0.5 else 0.5 / (1.0 - p1)
    return float(rng.exponential(mean))


def _time_changed_renewal(workload: Workload, t0: float, t1: float, rng: np.random.Generator) -> np.ndarray:
    """A unit-rate renewal process in operational time, mapped back through ``Lambda^-1``.

    ``Lambda(t) = integral_t0^t rate``. Arrival ``i`` is at ``Lambda^-1(u_i)`` with ``u_i`` the
    cumulative sums of unit-mean gaps, the first drawn from the stationary residual so that the
    process is stationary in operational time (mean count ``Lambda`` over any stretch). Where the
    rate is steady, gaps in real time have mean ``1 / rate`` and the chosen CV; with CV 1 this is
    exactly the Poisson process. The inverse is found per piece by a safeguarded Newton iteration
    on the exact cumulative intensity.
    """
    a, b, level = workload._pieces(t0, t1)
    integrals = workload._piece_integrals(a, b, level)
    lam_cum = np.concatenate(([0.0], np.cumsum(integrals)))
    total = lam_cum[-1]
    last = _equilibrium_gap(workload, rng)
    parts: list[np.ndarray] = [np.array([last])[: int(last < total)]]
    while last <= total:
        size = int(min(_CHUNK_CANDIDATES, max(1024.0, 1.1 * (total - last) + 10.0)))
        u = last + np.cumsum(_renewal_gaps(workload, rng, size))
        last = float(u[-1])
        parts.append(u[u < total])
    u = np.concatenate(parts) if parts else np.empty(0)
    out = np.empty(u.size)
    hours = SECONDS_PER_HOUR
    cum = workload.diurnal.cumulative
    for lo_i in range(0, u.size, _CHUNK_CANDIDATES):
        uu = u[lo_i : lo_i + _CHUNK_CANDIDATES]
        i = np.clip(np.searchsorted(lam_cum, uu, side="right") - 1, 0, a.size - 1)
        h0, h1 = a[i] / hours, b[i] / hours
        c0 = cum(h0)
        # Solve cumulative(h) = target for h in [h0, h1].
        c1 = cum(h1)
        with np.errstate(divide="ignore", invalid="ignore"):
            target = c0 + (uu - lam_cum[i]) / (level[i] * hours)
            h = np.where(c1 > c0, h0 + (target - c0) / (c1 - c0) * (h1 - h0), h0)
        h = _solve_cumulative(workload.diurnal, target, h, h0.copy(), h1.copy())
        out[lo_i : lo_i + uu.size] = np.clip(h * hours, a[i], b[i])
    return np.maximum.accumulate(out) if out.size else out


def generate_arrivals(
    workload: Workload,
    duration_s: float,
    *,
    seed: int,
    start_s: float = 0.0,
    replication: int = 0,
) -> pd.DataFrame:
    """The arrivals of ``workload`` over ``[start_s, start_s + duration_s)`` of its clock.

    Returns a DataFrame with exactly the columns of ``schema.ARRIVAL_COLUMNS``: ``request_id``
    0..n-1 in time order, ``t_s`` seconds from the start of the run (``start_s`` maps to 0; it only
    picks the time of day and week the run starts at), then class, priority, sizes and difficulty.
    ``frame.attrs`` records ``start_s``, ``duration_s``, ``seed`` and ``replication``.

    - ``interarrival_cv == 1``: a non-homogeneous Poisson process, exact, by thinning.
    - otherwise: a renewal process with unit-mean gaps of that CV (``workload.renewal``) run in
      operational time ``Lambda(t) = integral_start^t rate`` and mapped back to clock time, so
      the count over any stretch has mean ``integral rate`` and, where the rate is steady, gaps have
      the chosen CV. The process is started in equilibrium at ``start_s`` (the first arrival comes
      after a stationary residual gap, not a full one), so there is no start-up transient; runs
      of different windows are independent draws, not pieces of one stream. Gamma gaps with CV
      well above 1 include many near-zero gaps: requests arriving together, as in real bursty
      traces.

    ``seed`` and ``replication`` pick the random streams (see ``scaleplay.rng``); both are at most
    2**63 - 1. The window ends by ``MAX_CLOCK_S`` and may expect at most ``MAX_EXPECTED_ARRIVALS`` =
    10**8 arrivals (``workload.expected_arrivals``); a longer window is refused before any draw.
    """
    if not isinstance(workload, Workload):
        raise TypeError(f"workload must be a Workload, got {_kind(workload)}")
    t0, t1 = workload._window(start_s, duration_s)
    seed = check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    replication = check_int("replication", replication, minimum=0, maximum=MAX_SEED)
    expected = workload.expected_arrivals(t0, t1 - t0)
    if expected > MAX_EXPECTED_ARRIVALS:
        raise ValueError(
            f"duration_s={_show(duration_s)} would bring about {expected:.3g} arrivals at this workload's "
            f"rate; at most {MAX_EXPECTED_ARRIVALS:.0e} are allowed: shorten the window"
        )

    def rng(name: str) -> np.random.Generator:
        return stream(seed, f"workload.{name}", replication)

    if workload.interarrival_cv == 1.0:
        clock = _thinning(workload, t0, t1, rng("arrivals"))
    else:
        clock = _time_changed_renewal(workload, t0, t1, rng("arrivals"))
    t = clock - t0
    n = t.size

    classes = workload.classes
    shares = np.array([c.share for c in classes])
    edges = np.cumsum(shares) / shares.sum()
    which = np.minimum(np.searchsorted(edges, rng("classes").random(n), side="right"), len(classes) - 1)

    tokens_in = np.empty(n, dtype=np.int64)
    tokens_out = np.empty(n, dtype=np.int64)
    difficulty = np.empty(n, dtype=float)
    for k, c in enumerate(classes):
        mask = which == k
        m = int(mask.sum())
        tokens_in[mask] = c.tokens_in.sample(rng(f"tokens_in.{c.name}"), m)
        tokens_out[mask] = c.tokens_out.sample(rng(f"tokens_out.{c.name}"), m)
        difficulty[mask] = c.difficulty.sample(rng(f"difficulty.{c.name}"), m)

    names = np.array([c.name for c in classes], dtype=object)
    priorities = np.array([c.priority for c in classes], dtype=np.int64)
    frame = pd.DataFrame(
        {
            "request_id": np.arange(n, dtype=np.int64),
            "t_s": t.astype(np.float64),
            "class_name": pd.Series(names[which], dtype=object),
            "priority": priorities[which],
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "difficulty": difficulty,
        },
        columns=list(ARRIVAL_COLUMNS),
    )
    frame.attrs.update({"start_s": t0, "duration_s": t1 - t0, "seed": seed, "replication": replication})
    return frame
