"""Common machinery: named parameters in, per-tensor state, seeded noise."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from upgd.optim import noise_process
from upgd.optim.noise import NoisePrefetcher


class NamedOptimizer:
    """Takes ``(name, parameter)`` pairs (a list or a generator: it is materialised once).

    ``generator`` draws the Gaussian noise (``None``: torch's global RNG, as the original).
    Hyper-parameters are plain keyword arguments of the subclass constructors, so an unknown
    one is a ``TypeError`` there; :func:`upgd.learners.validate_hps` reports it earlier.
    """

    #: whether parameters whose name contains ``gate`` are left untouched
    skip_gates = True

    def __init__(self, named_params: Iterable[tuple[str, torch.Tensor]], generator: torch.Generator | None = None):
        pairs = list(named_params)
        self.names = [name for name, _ in pairs]
        self.params = [p for _, p in pairs]
        self.generator = generator
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.params]
        self.t = 0
        self.prefetcher: NoisePrefetcher | noise_process.NoiseProcess | None = None

    def prefetch_noise(self, process: bool = False) -> None:
        """Draw each step's noise ahead on a helper thread, or with ``process`` in a forked process
        where one can run (same values; see :mod:`upgd.optim.noise`, :mod:`upgd.optim.noise_process`).
        The runner turns it on for CPU runs and calls :meth:`step_done` after every step."""
        if self.generator is not None and self.generator.device.type == "cpu" and self.prefetcher is None:
            if process and noise_process.usable(self.generator):
                self.prefetcher = noise_process.NoiseProcess(self.generator)
            else:
                self.prefetcher = NoisePrefetcher(self.generator)

    def step_done(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.step_done()

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()
            self.prefetcher = None

    def active(self):
        """``(index, name, param)`` for every parameter this optimizer updates."""
        for i, (name, p) in enumerate(zip(self.names, self.params)):
            if self.skip_gates and "gate" in name:
                continue
            if p.grad is None:
                continue
            yield i, name, p

    def noise(self, like: torch.Tensor, sigma: float) -> torch.Tensor:
        if self.prefetcher is not None:
            return self.prefetcher.randn(like, sigma)
        xi = torch.randn(like.shape, generator=self.generator, device=like.device, dtype=like.dtype)
        return xi.mul_(sigma) if sigma != 1.0 else xi

    def noises(self, likes: list[torch.Tensor], sigma: float) -> list[torch.Tensor]:
        """:meth:`noise` for each tensor, in order."""
        if self.prefetcher is not None:
            return self.prefetcher.randn_all(likes, sigma)
        return [self.noise(like, sigma) for like in likes]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Per-tensor traces, the step count and the noise generator's state, for a checkpoint
        (tensors and plain values only, so it loads with ``weights_only=True``)."""
        return {
            "t": self.t,
            "state": [{key: value.detach().cpu().clone() for key, value in st.items()} for st in self.state],
            "generator": (self.prefetcher.generator_state() if self.prefetcher is not None
                          else self.generator.get_state() if self.generator is not None else None),
        }

    def load_state_dict(self, saved: dict) -> None:
        """Restore what :meth:`state_dict` returned; the traces go back to each parameter's device."""
        if len(saved["state"]) != len(self.params):
            raise ValueError(f"the checkpoint holds optimizer state for {len(saved['state'])} tensors, "
                             f"the network has {len(self.params)}")
        self.t = int(saved["t"])
        self.state = [{key: value.to(p.device) for key, value in st.items()}
                      for st, p in zip(saved["state"], self.params)]
        if self.prefetcher is not None:
            self.prefetcher.reset()
        if self.generator is not None and saved["generator"] is not None:
            self.generator.set_state(saved["generator"])
