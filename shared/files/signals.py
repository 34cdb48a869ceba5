"""SIGTERM and SIGINT in sections that must finish or clean up after themselves (staged outputs, MLflow runs).

A :class:`SignalSection` replaces the two handlers from the main thread (elsewhere it does nothing: only
the main thread may), leaves an ignored signal ignored, and puts the old handlers back on :meth:`restore`.
While ``deferring`` an arriving signal is only remembered in ``pending``; otherwise :meth:`act` handles it,
typically by raising, so ``finally`` blocks run. Subclasses decide what acting means.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalSection:
    """Handlers for :data:`SIGNALS` around a section; see the module docstring."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.deferring = False
        self.pending: int | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        """The installed handler: remember the signal while deferring, else :meth:`act` on it."""
        if self.deferring:
            self.pending = signum
        else:
            self.act(signum, frame)

    def act(self, signum: int, frame: FrameType | None) -> None:
        """Handle a signal that is not deferred (subclasses raise)."""
        raise NotImplementedError

    def install(self) -> None:
        """Replace the handlers of every signal that is not ignored (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            if signal.getsignal(sig) not in (signal.SIG_IGN, None):  # None: a C handler we could not restore
                self.previous[sig] = signal.signal(sig, self.handler)

    def restore(self) -> None:
        """Put the handlers found by :meth:`install` back (a pending signal stays in ``pending``)."""
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)


def signal_exit(signum: int) -> BaseException:
    """Python's default outcome of a signal: ``KeyboardInterrupt`` for SIGINT, else exit ``128 + signum``."""
    return KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)
