"""Which array library runs the GPU kernels: CuPy on a working device, else NumPy.

The choice is made once per process. CuPy counts only when it imports *and* a device answers a small
allocation (an installed CuPy on a machine without a GPU must not break a CPU run). Setting the
environment variable ``SCALEPLAY_FORCE_NUMPY=1`` forces NumPy, e.g. to compare the two on one machine.

Arrays carry their library with them: ``array_module(x)`` answers NumPy or CuPy for an array, so a
kernel given NumPy arrays runs its NumPy twin even on a machine with a GPU (which is how the parity
tests compare the two). ``to_device`` and ``to_host`` move arrays; random numbers are always drawn on
the host and copied over, so both backends see the same numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import numpy as np

__all__ = ["Backend", "backend", "gpu_backend", "FORCE_NUMPY_ENV", "array_module", "to_device", "to_host"]

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
def gpu_backend() -> Backend | None:
    """The CuPy backend if CuPy imports and a device answers, whatever the environment variable says
    (GPU tests compare it with NumPy); ``None`` otherwise."""
    return _try_cupy()


@cache
def backend() -> Backend:
    """The backend for this process (cached: decided once)."""
    if os.environ.get(FORCE_NUMPY_ENV, "") not in ("", "0"):
        return Backend("numpy", np, f"CPU (forced by {FORCE_NUMPY_ENV})")
    return gpu_backend() or Backend("numpy", np, "CPU")


def _is_cupy_array(x: object) -> bool:
    # By the type's module, so that a CPU-only run never imports CuPy.
    return type(x).__module__.split(".")[0] == "cupy"


def array_module(x: object) -> ModuleType:
    """``numpy`` or ``cupy``: the library of array ``x`` (``numpy`` for anything that is not CuPy)."""
    if _is_cupy_array(x):
        import cupy  # noqa: PLC0415 - only reached with a CuPy array in hand

        return cupy
    return np


def to_device(x: object, where: Backend | None = None) -> object:
    """``x`` as an array of ``where`` (default: this process's backend); no copy if it is already one."""
    where = backend() if where is None else where
    if where.is_gpu:
        return where.xp.asarray(x)
    return _cupy_to_numpy(x) if _is_cupy_array(x) else np.asarray(x)


def to_host(x: object) -> np.ndarray:
    """``x`` as a NumPy array (copied from the GPU when it is a CuPy array)."""
    return _cupy_to_numpy(x) if _is_cupy_array(x) else np.asarray(x)


def _cupy_to_numpy(x: object) -> np.ndarray:
    return x.get()  # type: ignore[attr-defined]
