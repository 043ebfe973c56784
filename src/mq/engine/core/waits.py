"""What one wait asks for (``Request``) and how its caller joins it while it sleeps (``Hooks``):
the same for every engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence


@dataclass(frozen=True)
class Request:
    """What one wait asks for."""

    name: str
    key: str
    timeout: int
    session: bool
    started: float


@dataclass(frozen=True)
class Hooks:
    """How the agent joins a wait: extra descriptors to watch and a periodic tick."""

    extra_fds: Sequence[int] = ()
    on_extra: Optional[Callable[[int], None]] = None
    on_tick: Optional[Callable[[], Optional[float]]] = None
    on_progress: Optional[Callable[[int, int], None]] = None  # (position, of how many) when it changes


__all__ = ["Hooks", "Request"]
