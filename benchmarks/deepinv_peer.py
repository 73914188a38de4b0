"""DeepInverse, the peer package of ``bench_deepinv``: importing it, the invdiff prior as its
denoiser, and running its samplers (``deepinv.sampling.DiffPIR`` and ``DPS``) into :class:`Run`s.

DeepInverse 0.5.0 imports torchvision at its top level; the torchvision wheels on PyPI are CUDA
builds that do not load beside a CPU-only torch. When torchvision cannot be imported, this
process (and only this process) imports DeepInverse with an empty stand-in for torchvision
(:func:`import_deepinv`): any use of a torchvision function raises. None of the classes used here
(physics, sampling and data fidelity) calls torchvision; the report says when the stand-in was
used.

The prior is seen as the denoiser DeepInverse expects (:class:`ScoreDenoiser`,
D(x, sigma) = x + sigma^2 s(x, sigma)); :func:`check_denoiser` checks it through DeepInverse's
own code against invdiff's Tweedie estimate.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import math
import sys
import time
import types
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.deepinv_physics import DinvPhysics
from invdiff.core.score import tweedie
from invdiff.core.sde import SDE, VESDE, bc
from invdiff.eval.metrics import psnr

NOT_INSTALLED = "deepinv not installed"


# DeepInverse, imported without torchvision if need be ------------------------------------------


class _Placeholder(type):
    """A stand-in class for any torchvision name: attributes give more stand-ins, calls raise."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(
            f"{cls.__qualname__}: torchvision is not available in this process (bench_deepinv "
            "imported deepinv with a stand-in for it); install a torchvision that loads"
        )


def _placeholder(qualname: str) -> type:
    return _Placeholder(qualname.rsplit(".", 1)[-1], (), {"__qualname__": qualname})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{self.__name__}.{name}")


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finder that answers ``import torchvision[.anything]`` with :class:`_StandInModule`s."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        module.__version__ = "0+stand-in"
        return module

    def exec_module(self, module) -> None:
        pass


def import_deepinv() -> tuple[types.ModuleType | None, str]:
    """Return (deepinv or None, a note on how it was imported or why not)."""
    if importlib.util.find_spec("deepinv") is None:
        return None, NOT_INSTALLED
    stand_in = None
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or RuntimeError of a CUDA build's ops
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        stand_in = _TorchvisionStandIn()
        sys.meta_path.insert(0, stand_in)
    try:
        import deepinv
    except Exception as err:  # noqa: BLE001 - report any failure as a row, not a crash
        return None, f"deepinv installed but not importable ({type(err).__name__}: {err})"
    finally:
        if stand_in is not None:
            sys.meta_path.remove(stand_in)
    how = (
        "imported with a stand-in for torchvision (not importable beside this torch); "
        "physics, sampling and data fidelity do not use it"
        if stand_in is not None
        else "imported normally"
    )
    return deepinv, f"deepinv {deepinv.__version__}, {how}"


# The prior as DeepInverse's denoiser -------------------------------------------------------------


def noise_time(sde: SDE, sigma: torch.Tensor) -> torch.Tensor:
    """Return the SDE time whose noise-to-signal ratio sigma_t / alpha_t is ``sigma``.

    VE: t = log(sigma / sigma_min) / log(sigma_max / sigma_min), extended beyond [0, 1] (the
    network is conditioned on log sigma, so a DeepInverse schedule that starts above sigma_max or
    ends below sigma_min still gets the sigma it asks for). Other SDEs: bisection, clamped.
    """
    if isinstance(sde, VESDE):
        return torch.log(sigma / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)
    return sde.time_of_ratio(sigma)


class ScoreDenoiser(torch.nn.Module):
    """An invdiff prior score as a DeepInverse denoiser: D(x, sigma) = E[x_0 | x_0 + sigma z].

    DeepInverse calls ``denoiser(x, sigma)`` with x = x_0 + sigma z in the data range [0, 1] (its
    samplers map their [-1, 1] states there, and sigma with them) and sigma in the same units,
    as a float or a tensor. invdiff's model lives in the same [0, 1] range with the noise-to-signal
    ratio sigma_t / alpha_t as its noise level, so D is Tweedie's estimate at the time of that
    ratio: for a VE SDE D(x, sigma) = x + sigma^2 s(x, t(sigma)); in general
    D = (alpha_t x + sigma_t^2 s(alpha_t x, t)) / alpha_t. The prior is the one invdiff's rows use
    (by default the clipped prior of ``invdiff solve``), so both packages query the same function.

    DeepInverse's MRI images have two channels (real, imaginary): the prior knows real images
    only, so the real channel is denoised and the imaginary one set to 0 (its posterior mean under
    a real-image prior). ``calls`` counts batched evaluations (NFE).
    """

    def __init__(self, prior, sde: SDE, channels: int = 1) -> None:
        super().__init__()
        self.prior, self.sde, self.channels, self.calls = prior, sde, channels, 0

    def forward(self, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
        self.calls += 1
        complex_pair = x.shape[1] == 2 * self.channels
        real = x[:, : self.channels] if complex_pair else x
        s = torch.as_tensor(sigma, dtype=real.dtype, device=real.device).reshape(-1)
        s = s.expand(real.shape[0]) if s.numel() == 1 else s
        t = noise_time(self.sde, s)
        alpha, _ = self.sde.coefficients(t)
        xt = bc(alpha, real) * real
        d = tweedie(self.sde, xt, t, self.prior.score(xt, t))
        return torch.cat([d, torch.zeros_like(d)], 1) if complex_pair else d


def check_denoiser(dinv, denoiser: ScoreDenoiser, images: torch.Tensor, seed: int) -> dict:
    """Compare DeepInverse's view of the prior with invdiff's own Tweedie estimate.

    Through DeepInverse's code: the prior score of its DPS diffusion (VP schedule, [-1, 1] states,
    its MinusOneOneDenoiserWrapper) is turned back into a denoised image,
    D = (x + (scale sigma)^2 score) / scale mapped to [0, 1], and compared with invdiff's Tweedie
    estimate of the same noisy image x_0 + (sigma / 2) z at noise sigma / 2 (its [0, 1] units).
    Returns the largest relative difference over a few noise levels (float32 rounding only).
    """
    sde = dinv.sampling.DPS(denoiser, device="cpu").sde
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.no_grad():
        for t in (0.05, 0.2, 0.5, 0.8):
            tt = torch.tensor(t, dtype=torch.float64)
            sigma, scale = sde.sigma_t(tt), sde.scale_t(tt)
            z = torch.randn(images.shape, generator=g, dtype=torch.float64)
            x = scale * ((2 * images.double() - 1) + sigma * z)
            score = sde.score(x, tt)
            ours_dinv = ((x + (scale * sigma) ** 2 * score) / scale + 1) / 2
            s2 = (sigma / 2).float()
            ref = denoiser((images + s2 * z.float()).float(), s2)
            diff = (ours_dinv.float() - ref).norm() / ref.norm()
            worst = max(worst, float(diff))
    return {"max_rel_diff": worst, "noise_levels_t": [0.05, 0.2, 0.5, 0.8]}


# Samplers ---------------------------------------------------------------------------------------


@dataclass
class Run:
    """Samples (N, K, C, H, W), network evaluations per sample and wall seconds of the batch."""

    samples: torch.Tensor
    nfe: int
    seconds: float
    knobs: dict


def run_deepinv_diffpir(
    dinv,
    den: ScoreDenoiser,
    phys,
    real,
    y,
    nfe: int,
    samples: int,
    seed: int,
    lambda_: float = 7.0,
    zeta: float = 0.1,
) -> Run:
    """``deepinv.sampling.DiffPIR`` (defaults lambda_ 7, zeta 0.1; L2 data fidelity whose prox
    the physics solves), ``max_iter = nfe`` (one denoiser call per iteration)."""
    n = len(y)
    fidelity = dinv.optim.data_fidelity.L2()
    sampler = dinv.sampling.DiffPIR(den, fidelity, max_iter=nfe, lambda_=lambda_, zeta=zeta)
    yy = y.repeat_interleave(samples, 0)
    torch.manual_seed(seed)  # DiffPIR draws from the global generator
    den.calls = 0
    start = time.perf_counter()
    with torch.no_grad():
        x = real(sampler(yy, phys))
    secs = time.perf_counter() - start
    knobs = {
        "max_iter": nfe,
        "lambda_": sampler.lambda_,
        "zeta": sampler.zeta,
        "likelihood_noise_std": float(phys.noise_model.sigma.reshape(-1)[0]),
        "prox": f"{type(phys).__name__}.prox_l2",
    }
    return Run(x.detach().reshape(n, samples, *x.shape[1:]), den.calls, secs, knobs)


def run_deepinv_dps(
    dinv,
    den: ScoreDenoiser,
    phys,
    real,
    y,
    shape,
    nfe: int,
    samples: int,
    seed: int,
    weight: float = 1.0,
) -> Run:
    """``deepinv.sampling.DPS`` (defaults: VP schedule, DDPM solver, residual-norm guidance of
    weight 1), ``num_steps = nfe + 1`` (its ancestral solver calls the denoiser at every time but
    the last)."""
    n = len(y)
    sampler = dinv.sampling.DPS(
        den,
        num_steps=nfe + 1,
        weight=weight,
        rng=torch.Generator().manual_seed(seed),
        device="cpu",
    )
    yy = y.repeat_interleave(samples, 0)
    den.calls = 0
    start = time.perf_counter()
    x = real(sampler(yy, phys, x_init=(len(yy), *shape), seed=seed))
    secs = time.perf_counter() - start
    knobs = {"num_steps": nfe + 1, "schedule": "vp", "solver": "ddpm", "weight": weight}
    x = x.detach().float()
    return Run(x.reshape(n, samples, *x.shape[1:]), den.calls, secs, knobs)


def tune_dps_weight(
    dinv, den: ScoreDenoiser, setup: DinvPhysics, truth, nfe: int, seed: int, weights
) -> dict:
    """Return DPS's best weight on validation images (one sample each) and the table."""
    with torch.no_grad():
        y = setup.physics.A(setup.embed(truth))
    shape = setup.embed(truth).shape[1:]
    table = []
    for w in weights:
        run = run_deepinv_dps(dinv, den, setup.physics, setup.real, y, shape, nfe, 1, seed, w)
        table.append({"weight": w, "mean_psnr": float(np.mean(psnr(run.samples[:, 0], truth)))})
        print(f"  DPS weight {w:g}: {table[-1]['mean_psnr']:.2f} dB (validation)", flush=True)
    best = max(table, key=lambda r: r["mean_psnr"])["weight"]
    return {"best": best, "validation_images": len(truth), "nfe": nfe, "table": table}
