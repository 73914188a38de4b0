"""DeepInverse side by side (issue 17, item 1): invdiff's samplers against DeepInverse's.

One run, the same test images, the same prior and the same number of network evaluations (NFE):

- invdiff's ``diffpir`` (DiffPIR: Zhu, Zhang, Liang, Cao, Wen, Timofte, Van Gool, "Denoising
  Diffusion Models for Plug-and-Play Image Restoration", CVPR Workshops 2023) and ``dps``
  (DPS: Chung, Kim, Mccann, Klasky, Ye, "Diffusion Posterior Sampling for General Noisy Inverse
  Problems", ICLR 2023) strategies, through ``invdiff.reconstruct`` as ``invdiff solve`` runs them;
- DeepInverse's own ``deepinv.sampling.DiffPIR`` and ``deepinv.sampling.DPS``, driven by the same
  invdiff prior seen as the denoiser DeepInverse expects (:class:`ScoreDenoiser`,
  D(x, sigma) = x + sigma^2 s(x, sigma)), each with DeepInverse's own defaults, on DeepInverse's
  physics (``deepinv.physics.Tomography``, ``deepinv.physics.MRI``) and, in the "cross" rows, on
  invdiff's operators wrapped as a ``deepinv.physics.LinearPhysics`` (the same y as invdiff's rows:
  the sampler is then the only difference); two more rows on DeepInverse's physics separate
  knobs from method: its DiffPIR with invdiff's lam and zeta, and its DPS with the guidance weight
  chosen on validation phantoms (its default weight 1 barely moves the samples towards the data).

Before any number, each task checks that DeepInverse's physics measures what ours does: the same
images through both, the best scale c in y_ours ~ c y_deepinv and the relative error after
scaling (:func:`physics_match`). MRI must match exactly; CT is compared raw and after aligning
the rotation centre (astra turns about (n - 1) / 2, DeepInverse's Radon about the centre of the
image zero-padded to its diagonal, half a pixel away at 64 px), and the run stops if even the
aligned sinograms differ by more than ``CT_ALIGNED_TOL`` (``--allow-mismatch`` goes on and labels
the rows). Forward + adjoint times of both packages' operators are reported.

Data: the harness's phantom test set (``benchmarks/datasets.py``, 64 x 64, the first ``--images``
test images of each task), ``--samples`` posterior samples per image, scored as their mean with
``invdiff.metrics`` psnr / ssim. Noiseless data, as in the harness: the DiffPIR rows assume the
harness's nominal likelihood noise (``harness_tasks.DIFFPIR_NOMINAL_STD``, in invdiff's
measurement units; DeepInverse's physics gets it divided by the checked scale).

DeepInverse 0.5.0 imports torchvision at its top level; the torchvision wheels on PyPI are CUDA
builds that do not load beside a CPU-only torch. When torchvision cannot be imported, this
process (and only this process) imports DeepInverse with an empty stand-in for torchvision
(:func:`import_deepinv`): any use of a torchvision function raises. None of the classes used here
(physics, sampling, data fidelity) calls torchvision; the report says when the stand-in was used.

    python benchmarks/bench_deepinv.py --threads 1 [--tasks ct23 mri8 --nfe 100 --images 4]

Writes results/deepinv.json and results/deepinv.md (``--name`` changes the stem; ``--render
results/deepinv.json`` rewrites the Markdown from the JSON without recomputing). Without
deepinv installed, invdiff's rows run and the DeepInverse rows say "deepinv not installed".
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: libgomp spin-waits otherwise

import argparse  # noqa: E402
import importlib.abc  # noqa: E402
import importlib.machinery  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

if not __package__:  # run by path: import benchmarks as a package, not its modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks import common, datasets  # noqa: E402
from benchmarks.harness_config import Config as HarnessConfig  # noqa: E402
from benchmarks.harness_report import jsonable  # noqa: E402
from benchmarks.harness_tasks import DIFFPIR_NOMINAL_STD, load_data, solver_op  # noqa: E402
from invdiff.guidance import strategy_options  # noqa: E402
from invdiff.metrics import SSIM_CONVENTION, psnr, ssim  # noqa: E402
from invdiff.reconstruct import reconstruct  # noqa: E402
from invdiff.score import data_range_prior, tweedie  # noqa: E402
from invdiff.sde import SDE, VESDE, bc  # noqa: E402

#: Tasks of ``datasets.TASKS`` this benchmark knows how to give DeepInverse.
SUPPORTED = ("ct23", "ct8", "mri4", "mri8")
#: Largest relative error of DeepInverse's MRI k-space against ours after scaling.
MRI_TOL = 1e-5
#: Largest relative error of DeepInverse's sinograms against ours after scaling and aligning the
#: rotation centre (the two projectors discretise the line integrals differently).
CT_ALIGNED_TOL = 0.02
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


# Physics ----------------------------------------------------------------------------------------


@dataclass
class DinvPhysics:
    """DeepInverse physics for one invdiff operator and the maps between the two conventions."""

    physics: object
    to_ours: object  # y_deepinv -> invdiff's measurement layout
    embed: object  # invdiff image (B, 1, H, W) -> DeepInverse image
    real: object  # DeepInverse image -> invdiff image
    label: str


def deepinv_physics(dinv, op, noise_std: float) -> DinvPhysics:
    """Return DeepInverse's own physics for ``op`` (ct_sparse or mri) with Gaussian noise_std.

    CT: ``Tomography(angles=views, img_width=n, normalize=False)``, parallel beam, the same
    equispaced angles over [0, 180) degrees, raw line integrals (no operator-norm scaling, like
    ours); its sinogram is (detector, view), ours (view, detector). MRI: ``MRI(mask)`` with our
    mask; its images and k-space are (real, imaginary) channel pairs, ours real / complex.
    """
    noise = dinv.physics.GaussianNoise(sigma=float(noise_std))
    _, h, w = op.image_shape
    if op.name == "ct_sparse":
        if h != w:
            raise ValueError("deepinv.physics.Tomography takes square images only")
        phys = dinv.physics.Tomography(
            angles=op.views, img_width=w, normalize=False, noise_model=noise, device="cpu"
        )
        return DinvPhysics(
            phys,
            lambda y: y.transpose(-2, -1),
            lambda x: x,
            lambda x: x,
            f"deepinv Tomography ({op.views} views, normalize=False)",
        )
    if op.name == "mri":
        phys = dinv.physics.MRI(
            mask=op.mask.detach().clone().float(), img_size=(1, 2, h, w), noise_model=noise
        )
        return DinvPhysics(
            phys,
            lambda y: torch.complex(y[:, :1].float(), y[:, 1:].float()),
            lambda x: torch.cat([x, torch.zeros_like(x)], 1),
            lambda x: x[:, :1],
            "deepinv MRI (our mask, complex as 2 channels)",
        )
    raise ValueError(f"no DeepInverse physics for operator {op.name!r}")


def wrap_operator(dinv, op, noise_std: float):
    """Return invdiff's operator as a ``deepinv.physics.LinearPhysics`` (for the cross rows)."""
    noise = dinv.physics.GaussianNoise(sigma=float(noise_std))
    return dinv.physics.LinearPhysics(A=op.forward, A_adjoint=op.adjoint, noise_model=noise)


def _fit(y_ref: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Return (c, ||c y - y_ref|| / ||y_ref||) with c the least-squares scale."""
    y_ref, y = y_ref.to(torch.complex128), y.to(torch.complex128)
    c = (y.conj() * y_ref).sum() / (y.abs() ** 2).sum()
    err = (c * y - y_ref).abs().norm() / y_ref.abs().norm()
    return float(c.real), float(err)


def shift_image(x: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    """Return x moved by (dy, dx) pixels (Fourier shift, periodic; sub-pixel shifts allowed)."""
    ky = torch.fft.fftfreq(x.shape[-2], dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(x.shape[-1], dtype=torch.float64)[None]
    phase = torch.exp(-2j * math.pi * (ky * dy + kx * dx))
    return torch.fft.ifft2(torch.fft.fft2(x.double()) * phase).real.to(x.dtype)


def physics_match(dinv, op, images: torch.Tensor, allow_mismatch: bool = False) -> dict:
    """Check that DeepInverse's physics measures what ``op`` measures on ``images``.

    Returns the scale c (y_ours ~ c y_deepinv), the relative error after scaling and, for CT, the
    same after moving the image by the half-pixel offset (0 or +-0.5 px on both axes) that best
    aligns the two rotation centres before DeepInverse projects it. Raises RuntimeError when the
    check fails (MRI: error > MRI_TOL; CT: aligned error > CT_ALIGNED_TOL) unless
    ``allow_mismatch``.
    """
    dp = deepinv_physics(dinv, op, 0.0)
    with torch.no_grad():
        y_ours = op(images)
        y_d = dp.to_ours(dp.physics.A(dp.embed(images)))
        if y_d.shape != y_ours.shape:
            out = {
                "match": False,
                "reason": f"shapes differ: deepinv {tuple(y_d.shape)}, ours {tuple(y_ours.shape)}",
            }
            if not allow_mismatch:
                raise RuntimeError(f"{op.name}: {out['reason']}")
            return out
        scale, err = _fit(y_ours, y_d)
        out = {"scale": scale, "rel_error": err, "images": len(images)}
        if op.name == "ct_sparse":
            # Where each projector puts the rotation centre: astra at (n - 1) / 2; DeepInverse at
            # the centre of the image zero-padded to its diagonal, which lies half a pixel off
            # (n - 1) / 2 when the padding is odd (64 px: 13 + 14 pixels). Try both half-pixel
            # moves and none; keep the best.
            fits = {}
            for offset in (0.0, 0.5, -0.5):
                moved = shift_image(images, offset, offset) if offset else images
                fits[offset] = _fit(y_ours, dp.to_ours(dp.physics.A(dp.embed(moved))))
            offset = min(fits, key=lambda k: fits[k][1])
            scale_al, err_al = fits[offset]
            out |= {
                "centre_offset_px": offset,
                "aligned_scale": scale_al,
                "aligned_rel_error": err_al,
                "tolerance": CT_ALIGNED_TOL,
                "mapping": "y_ours[v, d] = c * y_deepinv[d, v] (transpose, no flips)",
            }
            ok = err_al <= CT_ALIGNED_TOL
            out["verdict"] = (
                "same geometry and angles; "
                + (
                    f"the rotation centres differ by ({offset:+.1f}, {offset:+.1f}) px: once "
                    f"aligned the sinograms agree to {100 * err_al:.2f} %, as they are to "
                    f"{100 * err:.2f} %"
                    if offset
                    else f"the sinograms agree to {100 * err:.2f} %"
                )
                + "; the rest is the projectors' discretisation (astra's linear projector, "
                "DeepInverse's rotate-and-sum): each package is run with its own physics and y"
                if ok
                else f"different: {100 * err_al:.2f} % apart even with the best centre"
            )
        else:
            ok = err <= MRI_TOL
            out |= {"tolerance": MRI_TOL, "mapping": "y_ours = c * (y_re + i y_im)"}
            out["verdict"] = "identical up to rounding" if ok else f"different: {err:.2e} apart"
        out["match"] = bool(ok)
    if not ok and not allow_mismatch:
        raise RuntimeError(f"{op.name}: deepinv's physics does not match ours: {out}")
    return out


def operator_ms(forward, adjoint, x: torch.Tensor, repeats: int) -> float:
    """Return the median milliseconds of one forward and one adjoint on the batch x."""
    with torch.no_grad():
        y = forward(x)

    def both():
        with torch.no_grad():
            forward(x)
            adjoint(y)

    return common.median_ms(both, repeats, warmup=2)


# Samplers ---------------------------------------------------------------------------------------


@dataclass
class Run:
    """Samples (N, K, C, H, W), network evaluations per sample and wall seconds of the batch."""

    samples: torch.Tensor
    nfe: int
    seconds: float
    knobs: dict


def run_invdiff(prior, sde, op, y, strategy: str, nfe: int, samples: int, seed: int) -> Run:
    """invdiff's own strategy with its defaults, steps set so that NFE = ``nfe`` (steps + 1)."""
    options = {"steps": max(1, nfe - 1)}
    with torch.no_grad():
        rec = reconstruct(
            prior,
            sde,
            [op],
            [y],
            strategy=strategy,
            options=options,
            samples=samples,
            seed=seed,
            batch_size=len(y) * samples,
        )
    knobs = {**strategy_options(strategy), **options}
    if strategy == "diffpir":
        knobs["likelihood_noise_std"] = op.noise_std
    return Run(rec.samples, rec.nfe_per_sample, rec.seconds, knobs)


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


# One task ---------------------------------------------------------------------------------------


@dataclass
class Config:
    """Everything that decides the numbers; stored in the JSON."""

    tasks: list[str] = field(default_factory=lambda: ["ct23", "mri8"])
    nfe: list[int] = field(default_factory=lambda: [100])
    images: int = 4
    samples: int = 2
    seed: int = 0
    cross: bool = True  # also DeepInverse's samplers on invdiff's operators
    matched_diffpir: bool = True  # also deepinv's DiffPIR with invdiff's lam and zeta
    dps_weights: list[float] = field(default_factory=lambda: [0.3, 1.0, 3.0, 10.0, 30.0, 100.0])
    tune_images: int = 2  # validation images for deepinv DPS's weight
    allow_mismatch: bool = False
    clip: bool = True  # the clipped prior of `invdiff solve`
    threads: int = 1
    op_repeats: int = 10
    model: str | None = None
    name: str = "deepinv"
    size: int = datasets.SIZE
    n_val: int = datasets.N_VAL
    n_test: int = datasets.N_TEST
    data_dir: str = str(datasets.DATA)


def scored(run: Run, truth: torch.Tensor) -> dict:
    """Return PSNR / SSIM of the posterior mean (per image, mean and std) and the costs."""
    mean = run.samples.mean(1).float()
    p, s = psnr(mean, truth), ssim(mean, truth)
    return {
        "psnr": float(np.mean(p)),
        "psnr_std": float(np.std(p)),
        "ssim": float(np.mean(s)),
        "ssim_std": float(np.std(s)),
        "per_image_psnr": [float(v) for v in p],
        "per_image_ssim": [float(v) for v in s],
        "nfe": int(run.nfe),
        "seconds_per_image": run.seconds / len(truth),
        "knobs": run.knobs,
    }


def run_task(cfg: Config, name: str, split: dict, prior, sde, dinv, dinv_note: str) -> dict:
    """Run every row of one task; return its physics check, operator times and rows."""
    test = split["test"]
    truth, y = test["truth"][: cfg.images], test["y"][: cfg.images]
    op = test["op"]
    noise = op.noise_std or DIFFPIR_NOMINAL_STD
    op_diffpir = solver_op(test, noise)
    n_batch = len(truth) * cfg.samples
    batch = truth.repeat_interleave(cfg.samples, 0)
    out = {"title": test["attrs"]["title"], "operator": op.name, "params": test["params"]}
    times = {"invdiff": operator_ms(op.forward, op.adjoint, batch, cfg.op_repeats)}
    rows = []
    for nfe in cfg.nfe:
        for strategy in ("diffpir", "dps"):
            solver = op_diffpir if strategy == "diffpir" else op
            run = run_invdiff(prior, sde, solver, y, strategy, nfe, cfg.samples, cfg.seed)
            rows.append(
                {
                    "package": "invdiff",
                    "sampler": strategy,
                    "physics": f"invdiff {op.name}",
                    "target_nfe": nfe,
                    **scored(run, truth),
                }
            )
            print(f"{name} invdiff {strategy} {nfe}: {rows[-1]['psnr']:.2f} dB", flush=True)
    if dinv is None:
        for nfe in cfg.nfe:
            for sampler in ("DiffPIR", "DPS"):
                rows.append(
                    {
                        "package": "deepinv",
                        "sampler": sampler,
                        "physics": "-",
                        "target_nfe": nfe,
                        "not_run": dinv_note,
                    }
                )
        return out | {"physics_check": dinv_note, "operator_ms": times, "rows": rows}
    check = physics_match(dinv, op, truth, cfg.allow_mismatch)
    out["physics_check"] = check
    den = ScoreDenoiser(prior, sde, op.image_shape[0])
    out["denoiser_check"] = check_denoiser(dinv, den, truth[:2], cfg.seed)
    scale = check.get("aligned_scale", check.get("scale", 1.0))
    own = deepinv_physics(dinv, op, noise / scale)
    times["deepinv"] = operator_ms(
        own.physics.A, own.physics.A_adjoint, own.embed(batch), cfg.op_repeats
    )
    with torch.no_grad():
        ys = {"own": own.physics.A(own.embed(truth)), "cross": y}
    cross = DinvPhysics(
        wrap_operator(dinv, op, noise),
        lambda v: v,
        lambda x: x,
        lambda x: x,
        f"invdiff {op.name} as LinearPhysics",
    )
    knobs = strategy_options("diffpir")
    matched = {"lambda_": 2 * knobs["lam"], "zeta": knobs["zeta"]}
    out["dps_tuning"] = {}
    for nfe in cfg.nfe:
        jobs = [("DiffPIR", "defaults", "own", {}), ("DPS", "defaults", "own", {})]
        if cfg.cross:
            jobs += [("DiffPIR", "defaults", "cross", {}), ("DPS", "defaults", "cross", {})]
        if cfg.matched_diffpir:
            variant = f"invdiff's lam {knobs['lam']:g} and zeta {knobs['zeta']:g}"
            jobs.append(("DiffPIR", variant, "own", matched))
        if cfg.dps_weights:
            val = split["val"]["truth"][: cfg.tune_images]
            print(f"{name}: tuning deepinv DPS's weight at {nfe} NFE", flush=True)
            tuning = tune_dps_weight(dinv, den, own, val, nfe, cfg.seed, cfg.dps_weights)
            out["dps_tuning"][str(nfe)] = tuning
            plural = "s" if len(val) != 1 else ""
            variant = f"weight {tuning['best']:g}, tuned on {len(val)} validation image{plural}"
            jobs.append(("DPS", variant, "own", {"weight": tuning["best"]}))
        for sampler, variant, kind, extra in jobs:
            setup = own if kind == "own" else cross
            shape = setup.embed(truth).shape[1:]
            args = (dinv, den, setup.physics, setup.real, ys[kind])
            if sampler == "DiffPIR":
                run = run_deepinv_diffpir(*args, nfe, cfg.samples, cfg.seed, **extra)
            else:
                run = run_deepinv_dps(*args, shape, nfe, cfg.samples, cfg.seed, **extra)
            rows.append(
                {
                    "package": "deepinv",
                    "sampler": sampler,
                    "variant": variant,
                    "physics": setup.label,
                    "physics_kind": kind,
                    "target_nfe": nfe,
                    **scored(run, truth),
                }
            )
            r = rows[-1]
            print(
                f"{name} deepinv {sampler} ({variant}, {kind}) {nfe}: {r['psnr']:.2f} dB",
                flush=True,
            )
    out |= {"operator_ms": times, "operator_batch": n_batch, "rows": rows}
    return out


# Report -----------------------------------------------------------------------------------------


def fmt_row(task: str, r: dict) -> str:
    if "not_run" in r:
        return (
            f"| {task} | {r['package']} {r['sampler']} | {r['not_run']} | {r['target_nfe']} "
            "| - | - | - |"
        )
    variant = f" ({r['variant']})" if r.get("variant", "defaults") != "defaults" else ""
    return (
        f"| {task} | {r['package']} {r['sampler']}{variant} | {r['physics']} | {r['nfe']} | "
        f"{r['psnr']:.2f} +- {r['psnr_std']:.2f} | {r['ssim']:.3f} +- {r['ssim_std']:.3f} | "
        f"{r['seconds_per_image']:.2f} |"
    )


def markdown(report: dict) -> str:
    cfg, run = report["config"], report["run"]
    m = run["machine"]
    lines = [
        "# DeepInverse side by side (issue 17)",
        "",
        f"Produced by `{run['command']}` in {run['wall_seconds'] / 60:.1f} min on "
        f"{m['processor']} ({m['cpu_count']} cores, load average at start "
        f"{m['load_average_at_start']}), {cfg['threads']} torch thread(s), torch {m['torch']}. "
        f"{run['deepinv']}.",
        "",
        f"Prior: `{run['model']['name']}` (sha256 {run['model']['sha256'][:12]}, "
        f"{run['model']['training_steps']} training steps), "
        f"{'clipped to [0, 1] as `invdiff solve` does' if cfg['clip'] else 'raw (no clip)'}, "
        "the same function for every row (DeepInverse sees it through `ScoreDenoiser`, "
        "D(x, sigma) = x + sigma^2 s(x, sigma)). Data: the first "
        f"{cfg['images']} test phantoms of each harness task ({cfg['size']} x {cfg['size']}, "
        "noiseless, `benchmarks/datasets.py`), "
        f"{cfg['samples']} posterior samples per image, their mean scored; seed {cfg['seed']}. "
        f"PSNR: data range 1 on images clipped to [0, 1]; SSIM: {dict(SSIM_CONVENTION)}; "
        "mean +- std over images. NFE: network evaluations per sample, counted. Time: wall "
        "seconds per image, all its samples included (one batch of images x samples).",
        "",
        "## Physics check (before any number)",
        "",
        "| task | deepinv physics | scale c (y_ours = c y_deepinv) | rel. error after scaling "
        "| after aligning the rotation centre | verdict | invdiff fwd+adj (ms) "
        "| deepinv fwd+adj (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, res in report["tasks"].items():
        c, t = res["physics_check"], res["operator_ms"]
        if isinstance(c, str):
            lines.append(f"| {task} | {c} | - | - | - | - | {t['invdiff']:.2f} | - |")
            continue
        if "scale" not in c:
            lines.append(f"| {task} | - | - | - | - | {c['reason']} | {t['invdiff']:.2f} | - |")
            continue
        aligned = (
            f"{100 * c['aligned_rel_error']:.2f} % (c = {c['aligned_scale']:.4f})"
            if "aligned_rel_error" in c
            else "-"
        )
        lines.append(
            f"| {task} | {res.get('deepinv_label', '')} "
            f"| {c['scale']:.4f} | {100 * c['rel_error']:.3g} % | {aligned} | {c['verdict']} | "
            f"{t['invdiff']:.2f} | {t['deepinv']:.2f} |"
        )
    batch = next((r.get("operator_batch") for r in report["tasks"].values()), None)
    lines += [
        "",
        f"Operator times: median of one forward and one adjoint on the sampler's batch "
        f"({batch} images).",
    ]
    checks = {t: r["denoiser_check"] for t, r in report["tasks"].items() if "denoiser_check" in r}
    if checks:
        worst = max(c["max_rel_diff"] for c in checks.values())
        lines.append(
            "Denoiser check: the prior as DeepInverse's DPS diffusion sees it (its VP schedule, "
            "[-1, 1] states and MinusOneOneDenoiserWrapper) against invdiff's own Tweedie "
            f"estimate of the same noisy images: largest relative difference {worst:.1e}."
        )
    lines += [
        "",
        "## Results",
        "",
        "| task | sampler | physics | NFE | PSNR (dB) | SSIM | s / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, res in report["tasks"].items():
        for r in res["rows"]:
            lines.append(fmt_row(task, r))
    lines += ["", "## Settings", ""]
    lines += [
        "- invdiff diffpir / dps: `invdiff.reconstruct` with each strategy's defaults "
        f"(diffpir {report['defaults']['diffpir']}, dps {report['defaults']['dps']}), steps = "
        "NFE - 1 (one more evaluation for the final Tweedie step); diffpir assumes likelihood "
        f"noise {report['nominal_noise_std']} on noiseless data (DIFFPIR_NOMINAL_STD).",
        "- deepinv DiffPIR: `deepinv.sampling.DiffPIR(denoiser, L2(), max_iter=NFE)` with its "
        "defaults (lambda_ 7, zeta 0.1), the same nominal noise as the physics' GaussianNoise "
        "(divided by the checked scale on its own physics); its data step is the physics' prox "
        "(closed form for MRI, conjugate gradients, at most 50 iterations, for CT); its last "
        "denoiser evaluation is counted though deepinv 0.5.0 returns the state before it. Its "
        "lambda_ "
        "is twice invdiff's lam (it weighs ||x - x0||^2 in [-1, 1] units), so the row with "
        "invdiff's knobs runs lambda_ = 2 lam and invdiff's zeta: what is left is its own time "
        "schedule and initialisation.",
        "- deepinv DPS: `deepinv.sampling.DPS(denoiser, num_steps=NFE + 1, weight=w)` (VP "
        "schedule, DDPM solver, residual-norm guidance; default w = 1), initial state drawn "
        "from its prior. It adds w grad ||y - A D(x)|| to the score, so the move it makes on x "
        "shrinks with the solver's step in noise variance and grows with the scale of A: the "
        "tuned row picks w from the grid below on validation phantoms (seed 1, never the test "
        "images), one sample each, at the same NFE.",
        "- invdiff's own knobs are its defaults, chosen earlier on other validation images (the "
        "OOD suite's), not on these phantoms.",
        "- physics 'deepinv ...': DeepInverse's operator and its own y = A x of the same images; "
        "'invdiff ... as LinearPhysics': invdiff's operator in DeepInverse's sampler, the same y "
        "as invdiff's rows (only the sampler differs).",
    ]
    tuned = {t: r["dps_tuning"] for t, r in report["tasks"].items() if r.get("dps_tuning")}
    for task, by_nfe in tuned.items():
        for nfe, tun in by_nfe.items():
            table = ", ".join(f"{r['weight']:g}: {r['mean_psnr']:.2f}" for r in tun["table"])
            grid = [r["weight"] for r in tun["table"]]
            edge = " (at the edge of the grid)" if tun["best"] in (min(grid), max(grid)) else ""
            lines.append(
                f"- {task}, {nfe} NFE, deepinv DPS weight: validation PSNR (dB) {table}; "
                f"chosen {tun['best']:g}{edge}."
            )
    src = report["run"].get("invdiff_source") or {}
    if src:
        dirty = src.get("modified") or []
        lines.append(
            f"- invdiff source: commit {src.get('commit', '?')[:12]}"
            + (f", with uncommitted changes to {', '.join(dirty)}" if dirty else "")
            + "."
        )
    lines.append("")
    return "\n".join(lines)


def source_state() -> dict:
    """Return the git commit of the working tree and its modified files under invdiff/ and
    operators/ (what the invdiff rows ran), or {} outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "invdiff", "operators"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"commit": commit, "modified": [line[3:] for line in status.splitlines() if line]}


def run(
    cfg: Config,
    model=None,
    config: dict | None = None,
    dinv=None,
    dinv_note: str = NOT_INSTALLED,
    command: str = "",
    model_info: dict | None = None,
    results: Path | None = None,
) -> dict:
    """Run every task of cfg, write NAME.json and NAME.md into ``results`` (default
    ``benchmarks/results``); return the report (plain JSON values)."""
    start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    unknown = sorted(set(cfg.tasks) - set(SUPPORTED))
    if unknown:
        raise ValueError(f"tasks {unknown} not supported; choose from {SUPPORTED}")
    if model is None:
        from invdiff.checkpoint import file_sha256, load_model, resolve_model

        path = resolve_model(cfg.model)
        model, config = load_model(path)
        model_info = {
            "name": cfg.model or path.stem,
            "sha256": file_sha256(path),
            "training_steps": config.get("training", {}).get("steps_done"),
        }
    prior = data_range_prior(model, config or {}, cfg.clip)
    hcfg = HarnessConfig(
        tasks=list(cfg.tasks),
        size=cfg.size,
        n_val=cfg.n_val,
        n_test=cfg.n_test,
        data_dir=cfg.data_dir,
    )
    data, checksums = load_data(hcfg)
    tasks = {}
    for name in cfg.tasks:
        tasks[name] = run_task(cfg, name, data[name], prior, model.sde, dinv, dinv_note)
        if dinv is not None:
            tasks[name]["deepinv_label"] = next(
                (r["physics"] for r in tasks[name]["rows"] if r.get("physics_kind") == "own"), ""
            )
    report = {
        "config": asdict(cfg),
        "run": {
            "command": command,
            "wall_seconds": time.perf_counter() - start,
            "machine": common.machine(cfg.threads),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "deepinv": dinv_note,
            "model": model_info or {"name": "in-memory", "sha256": "-", "training_steps": None},
            "data": checksums,
            "invdiff_source": source_state(),
        },
        "defaults": {s: strategy_options(s) for s in ("diffpir", "dps")},
        "nominal_noise_std": DIFFPIR_NOMINAL_STD,
        "tasks": tasks,
    }
    clean = jsonable(report)
    common.write_results(cfg.name, clean, markdown(clean), results or common.RESULTS)
    return clean


def parse(argv: list[str] | None = None) -> tuple[Config, str, bool, Path | None]:
    """Return the Config, the command that reproduces it, --no-deepinv and --render."""
    d = Config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", choices=SUPPORTED, default=d.tasks)
    p.add_argument("--nfe", nargs="+", type=int, default=d.nfe)
    p.add_argument("--images", type=int, default=d.images, help="test images per task")
    p.add_argument("--samples", type=int, default=d.samples, help="posterior samples per image")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--model", default=None, help="model name or file (default: the shipped one)")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--name", default=d.name, help="results stem: NAME.json, NAME.md")
    p.add_argument("--no-cross", dest="cross", action="store_false", help="skip the cross rows")
    p.add_argument(
        "--no-matched",
        dest="matched_diffpir",
        action="store_false",
        help="skip deepinv DiffPIR with invdiff's lam and zeta",
    )
    p.add_argument(
        "--dps-weights",
        nargs="*",
        type=float,
        default=d.dps_weights,
        help="deepinv DPS weights tried on validation images (none: no tuned row)",
    )
    p.add_argument("--tune-images", type=int, default=d.tune_images)
    p.add_argument("--no-clip", dest="clip", action="store_false", help="raw prior, no clip")
    p.add_argument("--allow-mismatch", action="store_true", help="go on if the physics differ")
    p.add_argument("--no-deepinv", action="store_true", help="invdiff rows only")
    p.add_argument("--render", type=Path, help="only rewrite the Markdown of this JSON report")
    args = p.parse_args(argv)
    cfg = Config(
        **{k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__},
    )
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/bench_deepinv.py", *argv])
    return cfg, command, args.no_deepinv, args.render


def main() -> None:
    cfg, command, no_deepinv, render = parse()
    if render is not None:
        render.with_suffix(".md").write_text(markdown(json.loads(render.read_text())))
        print(f"wrote {render.with_suffix('.md')}")
        return
    torch.set_num_threads(cfg.threads)
    dinv, note = (None, "deepinv not used (--no-deepinv)") if no_deepinv else import_deepinv()
    print(note, flush=True)
    run(cfg, dinv=dinv, dinv_note=note, command=command)


if __name__ == "__main__":
    main()
