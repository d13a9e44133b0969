"""The HTTP app's engines: one per thread that serves routes, closed as that thread ends.

An Engine's SQLite connection may be used, and closed, only by the thread that opened
it, so no engine is shared and none can be closed from the thread that shuts the app
down. Instead each engine sits in its thread's locals, which the thread drops, in that
thread, as it ends: that closes the engine there. The ASGI server's worker threads end
once the app has shut down (anyio stops them when the server's main task is done).
"""

from __future__ import annotations

import threading

from .config import Settings
from .engine import Engine


class ThreadEngines:
    """Call it for this thread's Engine on ``settings`` (made on first use)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._local = threading.local()

    def __call__(self) -> Engine:
        held: _Held | None = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = _Held(Engine(self._settings))
        return held.engine


class _Held:
    """An Engine in one thread's locals: closed when they are dropped in that thread (as
    it ends); dropped by another (the app freed first), the garbage collector frees it,
    since closing it there would raise."""

    __slots__ = ("engine", "thread")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.thread = threading.get_ident()

    def __del__(self) -> None:
        if threading.get_ident() == self.thread:
            self.engine.close()
