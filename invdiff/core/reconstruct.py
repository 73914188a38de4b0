"""The one path from measurements to posterior samples: batches, seeds, NFE, wall time.

``invdiff solve``, the benchmark harness and the benchmark scripts all call :func:`reconstruct`,
so a figure in BENCHMARKS.md and the command line's output for the same inputs are the same
computation. The seed scheme is :func:`sample_seed`: sample j of slice i draws all its noise from
its own generator seeded with ``seed + i * K + j`` (K samples per slice), so it does not depend on
the batch it lands in (k-diffusion / EDM practice: one generator per image).
:func:`sample_prior` draws samples without data (``invdiff sample``) through the same batches and
seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from invdiff.core.operator import Operator
from invdiff.core.samplers import SampleResult, generators_for
from invdiff.core.score import ScoreFn
from invdiff.core.sde import SDE
from invdiff.guidance import DEFAULT_STRATEGY, Measurement, check_strategy
from invdiff.guidance import solve as posterior


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
    nfe_total: int = 0  # network evaluations of all batches together

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
    check_strategy(strategy, operators)

    def draw(rows: Tensor, gens: list[torch.Generator]) -> SampleResult:
        ms = [
            Measurement(op, y[rows.to(y.device)].to(device))
            for op, y in zip(operators, measurements, strict=True)
        ]
        return posterior(
            prior, sde, ms, gens, strategy=strategy, callback=callback, **(options or {})
        )

    shape = operators[0].image_shape
    return _batched(draw, len(measurements[0]), shape, samples, seed, batch_size, device)


def sample_prior(
    draw: Callable[[list[torch.Generator]], SampleResult],
    shape: Sequence[int],
    *,
    samples: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> Reconstruction:
    """Draw ``samples`` samples without data (``invdiff sample``): one "slice", the same batches
    and seed scheme as :func:`reconstruct`, so sample j uses ``seed + j`` whatever its batch.

    ``draw(generators)`` runs a sampler (PC or ODE, on the prior or a classifier-guided prior)
    for one batch of images of ``shape`` (C, H, W), one generator per sample.
    """
    return _batched(lambda _, gens: draw(gens), 1, shape, samples, seed, batch_size, device)


def _batched(draw, n: int, shape, samples: int, seed: int, batch_size: int, device):
    """Run ``draw(rows, generators)`` over the N x K (slice, sample) pairs, ``batch_size`` at a
    time, each with the generator of :func:`sample_seed`; collect samples, NFE and time."""
    if samples < 1 or batch_size < 1:
        raise ValueError("samples and batch_size must be positive")
    pairs = [(i, j) for i in range(n) for j in range(samples)]
    out = torch.empty((n, samples, *shape))
    nfe = vjp = nfe_total = 0
    _sync(device)
    start = time.perf_counter()
    for c in range(0, len(pairs), batch_size):
        chunk = pairs[c : c + batch_size]
        rows = torch.tensor([i for i, _ in chunk])
        gens = generators_for([sample_seed(seed, i, samples, j) for i, j in chunk], device)
        res = draw(rows, gens)
        for (i, j), x in zip(chunk, res.x.float().cpu(), strict=True):
            out[i, j] = x
        nfe, vjp, nfe_total = max(nfe, res.nfe), max(vjp, res.vjp), nfe_total + res.nfe
    _sync(device)
    return Reconstruction(out, nfe, vjp, time.perf_counter() - start, nfe_total)


def _sync(device: str | torch.device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)
