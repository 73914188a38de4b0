"""The one path from measurements to posterior samples: batches, seeds, NFE, wall time.

``invdiff solve``, the benchmark harness and the benchmark scripts all call :func:`reconstruct`,
so a figure in BENCHMARKS.md and the command line's output for the same inputs are the same
computation. The seed scheme is :func:`sample_seed`: sample j of slice i draws all its noise from
its own generator seeded with ``seed + i * K + j`` (K samples per slice), so it does not depend on
the batch it lands in (k-diffusion / EDM practice: one generator per image).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from invdiff.guidance import DEFAULT_STRATEGY, Measurement, check_strategy
from invdiff.guidance import solve as posterior
from invdiff.operator import Operator
from invdiff.samplers import generators_for
from invdiff.score import ScoreFn
from invdiff.sde import SDE


def sample_seed(seed: int, slice_index: int, samples: int, sample_index: int) -> int:
    """Return the seed of sample ``sample_index`` of slice ``slice_index`` (K = ``samples``)."""
    return seed + slice_index * samples + sample_index


SEED_SCHEME = "sample j of slice i uses seed + i * K + j (K samples per slice)"


@dataclass(frozen=True)
class Reconstruction:
    """Posterior samples (N, K, C, H, W) on the CPU and what they cost."""

    samples: Tensor
    nfe_per_sample: int
    vjp_per_sample: int
    seconds: float

    @property
    def mean(self) -> Tensor:
        """Return the posterior mean (N, C, H, W): the reconstruction."""
        return self.samples.mean(1)

    @property
    def std(self) -> Tensor | None:
        """Return the per-pixel posterior std (N, C, H, W), or None for one sample."""
        return self.samples.std(1) if self.samples.shape[1] > 1 else None


def reconstruct(
    prior: ScoreFn,
    sde: SDE,
    operators: Sequence[Operator],
    measurements: Sequence[Tensor],
    *,
    strategy: str = DEFAULT_STRATEGY,
    options: dict | None = None,
    samples: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    callback: Callable[[int], None] | None = None,
) -> Reconstruction:
    """Draw ``samples`` posterior samples for each of the N slices measured by ``operators``.

    ``measurements[k]`` holds the N measurements of ``operators[k]`` (a time-conditional operator
    takes its labels). Samples of several slices share network calls, ``batch_size`` at a time.
    ``options`` are the strategy's knobs (``guidance.strategy_options``).
    """
    if samples < 1 or batch_size < 1:
        raise ValueError("samples and batch_size must be positive")
    check_strategy(strategy, operators)
    n = len(measurements[0])
    shape = operators[0].image_shape
    pairs = [(i, j) for i in range(n) for j in range(samples)]
    out = torch.empty((n, samples, *shape))
    nfe = vjp = 0
    _sync(device)
    start = time.perf_counter()
    for c in range(0, len(pairs), batch_size):
        chunk = pairs[c : c + batch_size]
        rows = torch.tensor([i for i, _ in chunk])
        gens = generators_for([sample_seed(seed, i, samples, j) for i, j in chunk], device)
        ms = [
            Measurement(op, y[rows.to(y.device)].to(device))
            for op, y in zip(operators, measurements, strict=True)
        ]
        res = posterior(
            prior, sde, ms, gens, strategy=strategy, callback=callback, **(options or {})
        )
        for (i, j), x in zip(chunk, res.x.float().cpu(), strict=True):
            out[i, j] = x
        nfe, vjp = max(nfe, res.nfe), max(vjp, res.vjp)
    _sync(device)
    return Reconstruction(out, nfe, vjp, time.perf_counter() - start)


def _sync(device: str | torch.device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)
