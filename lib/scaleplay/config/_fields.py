"""What every config's ``__post_init__`` uses: set a checked field on a frozen dataclass, and check a
field that ``None`` switches off."""

from __future__ import annotations

from collections.abc import Callable


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _optional(
    check: Callable[..., object], name: str, value: object, *args: float, **kwargs: object
) -> object:
    return None if value is None else check(name, value, *args, **kwargs)
