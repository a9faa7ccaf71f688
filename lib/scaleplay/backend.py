"""Which array library runs the GPU kernels: CuPy on a working device, else NumPy.

The choice is made once per process. CuPy counts only when it imports *and* a device answers a small
allocation (an installed CuPy on a machine without a GPU must not break a CPU run). Setting the
environment variable ``SCALEPLAY_FORCE_NUMPY=1`` forces NumPy, e.g. to compare the two on one machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import numpy as np

__all__ = ["Backend", "backend", "FORCE_NUMPY_ENV"]

FORCE_NUMPY_ENV = "SCALEPLAY_FORCE_NUMPY"


@dataclass(frozen=True)
class Backend:
    """The array module (``xp``) and a description of the device it runs on."""

    name: str  # "cupy" or "numpy"
    xp: ModuleType
    device: str

    @property
    def is_gpu(self) -> bool:
        return self.name == "cupy"


def _try_cupy() -> Backend | None:
    try:
        import cupy  # noqa: PLC0415 - optional dependency

        cupy.zeros(1).sum().item()  # a device must answer, not just the import
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return Backend("cupy", cupy, f"GPU: {name}")
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return None


@cache
def backend() -> Backend:
    """The backend for this process (cached: decided once)."""
    if os.environ.get(FORCE_NUMPY_ENV, "") not in ("", "0"):
        return Backend("numpy", np, f"CPU (forced by {FORCE_NUMPY_ENV})")
    return _try_cupy() or Backend("numpy", np, "CPU")
