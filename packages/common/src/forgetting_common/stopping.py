"""Stop a training loop at a step boundary when Ctrl-C or SIGTERM arrives, so it can checkpoint.

A signal in the middle of an optimiser step would leave a state no checkpoint can describe
exactly. ``DeferredStop`` remembers the signal; the loop checks :attr:`requested` after each
step, writes its checkpoint, and calls :meth:`stop`, which raises what the signal would have
raised (``KeyboardInterrupt``, or :class:`~forgetting_common.errors.Terminated` for SIGTERM, so
that ``run_main`` exits 130 or 143). A second signal stops at once::

    with DeferredStop("run_mnist.py") as stop:
        for step in ...:
            train_step()
            if stop.requested:
                save_checkpoint()
                stop.stop()
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from forgetting_common.errors import Terminated


class DeferredStop:
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, prog: str | None = None, unit: str = "step") -> None:
        self.prog = prog
        self.unit = unit
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> DeferredStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002 (signal handler signature)
        if self.signum is not None:
            self._raise(signum)
        self.signum = signum
        if self.prog:
            print(f"{self.prog}: {signal.Signals(signum).name} received: stopping after this {self.unit} "
                  "(send it again to stop at once)", file=sys.stderr, flush=True)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def stop(self) -> None:
        """Raise what the remembered signal would have raised (no-op when none came)."""
        if self.signum is not None:
            self._raise(self.signum)

    @staticmethod
    def _raise(signum: int) -> None:
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
