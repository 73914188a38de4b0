"""Denoising score matching with EMA, checkpoints and exact resume; DDP through torchrun.

Loss (Song et al. 2021, eq. 7, lambda(t) = sigma_t^2; Vincent 2011):
    E_t E_{x_0} E_z || sigma_t s_theta(alpha_t x_0 + sigma_t z, t) + z ||^2,  t ~ U(t_min, 1),
which for the noise-predicting parameterisation of :class:`ScoreModel` is || z_hat - z ||^2.

Determinism: the batch, times and noise of step k come from a generator seeded with (seed, k)
alone, and the full optimiser / EMA / scheduler state is checkpointed, so a run killed at any point
and resumed with ``resume=True`` reaches the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from invdiff import torchrun
from invdiff.core import checkpoint as ckpt
from invdiff.core.score import ScoreModel
from invdiff.core.sde import SDE, bc
from invdiff.errors import InvdiffError
from invdiff.training.augment import CropConfig, random_crops


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; stored in the checkpoint."""

    steps: int = 10_000
    batch_size: int = 16
    lr: float = 2e-4
    warmup: int = 500  # linear learning-rate warm-up steps
    # Cosine anneal of the learning rate from lr to lr * lr_final over lr_decay_steps steps,
    # starting at step lr_decay_start (0 steps: constant). It depends on the step alone, so a run
    # trained at a constant rate can be resumed with an anneal added.
    lr_decay_start: int = 0
    lr_decay_steps: int = 0
    lr_final: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ckpt_every: int = 500
    seed: int = 0
    # Training noise levels: "uniform" draws t ~ U(t_min, 1); "lognormal" draws the noise-to-signal
    # ratio s with log s ~ N(p_mean, p_std^2) (Karras et al. 2022, Sec. 5) and maps it to t.
    noise_dist: str = "uniform"
    p_mean: float = -1.2
    p_std: float = 1.2


def state_path(out: str | Path) -> Path:
    """Return where the resumable training state of ``out`` lives."""
    out = Path(out)
    return out.with_name(out.name + ".train")


def lr_factor(tc: TrainConfig, step: int) -> float:
    """Return the learning-rate multiplier of ``step``: linear warm-up, then an optional cosine
    anneal to ``tc.lr_final`` (Loshchilov & Hutter 2017, eq. 5, one cycle without restart)."""
    warm = min(1.0, (step + 1) / max(tc.warmup, 1))
    if tc.lr_decay_steps <= 0 or step < tc.lr_decay_start:
        return warm
    frac = min(1.0, (step - tc.lr_decay_start) / tc.lr_decay_steps)
    return warm * (tc.lr_final + (1 - tc.lr_final) * 0.5 * (1 + math.cos(math.pi * frac)))


def step_generator(seed: int, step: int) -> torch.Generator:
    """Return the CPU generator for one training step; it depends on (seed, step) only."""
    state = np.random.SeedSequence([seed, step]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] % (2**63)))


def dsm_loss(
    out_fn: Callable[[Tensor, Tensor], Tensor],
    model: ScoreModel,
    x0: Tensor,
    t: Tensor,
    z: Tensor,
) -> Tensor:
    """Return the denoising score-matching loss of a batch in the model's output space.

    ``out_fn`` is ``model`` or its DistributedDataParallel wrapper; the weighting over noise
    levels is the one of the model's preconditioning (see :class:`ScoreModel`).
    """
    alpha, sigma = model.sde.coefficients(t)
    xt = bc(alpha, x0) * x0 + bc(sigma, x0) * z
    return (out_fn(xt, t) - model.target(x0, z, t)).pow(2).mean()


def draw_batch(
    images: Tensor,
    sde: SDE,
    batch: int,
    seed: int,
    step: int,
    tc: TrainConfig | None = None,
    crop: CropConfig | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw (x_0, t, z) of one step from its own generator; the same on every rank.

    With ``crop``, x_0 are random crops (:func:`invdiff.training.augment.random_crops`), else whole
    images.
    """
    g = step_generator(seed, step)
    idx = torch.randint(len(images), (batch,), generator=g)
    x0 = images[idx] if crop is None else random_crops(images, idx, crop, g)
    if tc is not None and tc.noise_dist == "lognormal":
        ratio = torch.exp(tc.p_mean + tc.p_std * torch.randn(batch, generator=g))
        t = sde.time_of_ratio(ratio).double()
    else:
        t = sde.t_min + (1 - sde.t_min) * torch.rand(batch, generator=g, dtype=torch.float64)
    z = torch.randn(x0.shape, generator=g)
    return x0, t.float(), z


def _dist() -> tuple[int, int, int]:
    """Return (rank, world size, local rank), initialising torch.distributed under torchrun."""
    _, world, local = torchrun.ranks()
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank() if world > 1 else 0), world, local


def _check_resume(
    saved: dict[str, Any], config: dict[str, Any], path: Path, keys=("net", "sde", "image")
) -> None:
    for key in keys:
        if saved.get(key) != config.get(key):
            raise InvdiffError(
                f"training state {path} was made with another {key} ({saved.get(key)}); "
                "resume with the same options or delete the .train file"
            )


def save_state(spath: Path, config: dict[str, Any], step: int, elapsed: float, **parts) -> None:
    """Write the resumable state (atomically): every part's state_dict, the step, the time."""
    payload = {k: v.state_dict() for k, v in parts.items()}
    _write_state(spath, {**payload, "config": config, "step": step, "elapsed": elapsed})


def _write_state(spath: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (parts' state_dicts, config as a dict, step, elapsed) in STATE_FORMAT."""
    config = json.dumps(state["config"], default=str)
    ckpt.save(spath, {**state, "format": ckpt.STATE_FORMAT, "config": config})


def load_state(
    spath: Path, config: dict[str, Any], device, keys=("net", "sde", "image"), **parts
) -> tuple[int, float]:
    """Load a state written by :func:`save_state` or :func:`compact_state` into ``parts``;
    return (step, elapsed). Tensors stored in a lower precision are cast back to the parts' own
    (``load_state_dict`` does), and an Adam first moment that a compact state left out restarts
    at zero."""
    state = ckpt.load(spath, ckpt.STATE_FORMAT, map_location=device)
    _check_resume(state["config"], config, spath, keys)
    for k, v in parts.items():
        if isinstance(v, torch.optim.Adam):
            for moments in state[k]["state"].values():
                moments.setdefault("exp_avg", torch.zeros_like(moments["exp_avg_sq"]))
        v.load_state_dict(state[k])
    return int(state["step"]), float(state["elapsed"])


def compact_state(src: Path, dst: Path, dtype: torch.dtype = torch.bfloat16) -> None:
    """Write a smaller copy of the training state ``src`` to ``dst``, for keeping in git.

    The weights stay in float32; the EMA and Adam's second moment are stored in ``dtype``
    (bfloat16: float32's range, relative rounding 2^-9) and Adam's first moment is left out
    (with beta1 = 0.9 it is rebuilt within ~20 steps; :func:`load_state` restarts it at zero).
    A network of P parameters then takes 8 P bytes instead of 16 P. Resuming from it is close
    to, not bit-exact with, an uninterrupted run (tests/training/test_train.py measures how close).
    """
    state = ckpt.load(src, ckpt.STATE_FORMAT)
    state.pop(ckpt.CHECKSUM_KEY, None)
    state["ema"] = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state["ema"].items()}
    for moments in state["optimizer"]["state"].values():
        moments.pop("exp_avg", None)
        moments["exp_avg_sq"] = moments["exp_avg_sq"].to(dtype)
    _write_state(dst, state)


#: The parts of a model's config that a run started from its weights (``--init``) must share
#: with it, and the `invdiff train` options that set each part.
INIT_PARTS: dict[str, tuple[str, ...]] = {
    "net": ("base", "mult", "res_blocks", "attn", "mid_attention", "norm"),
    "sde": ("sde", "sigma_max", "sigma_min"),
    "precond": ("precond",),
}


def init_parts(source: dict[str, Any], given: set[str], channels: int) -> dict[str, Any]:
    """Return the parts of :data:`INIT_PARTS` that a run started from the model whose config is
    ``source`` takes from it: those that no option in ``given`` (the options set on the command
    line) sets, so `invdiff train new.h5 --init general` needs no network options. Raise
    InvdiffError when the model's channels differ from the data's ``channels``."""
    have = source["image"]["channels"]
    if have != channels:
        raise InvdiffError(
            f"--init: the model has {have} channel(s) and the training images {channels}; start "
            f"from a {channels}-channel model or train without --init"
        )
    return {part: source[part] for part, options in INIT_PARTS.items() if not given & set(options)}


def initialise_from(
    model: ScoreModel,
    config: dict[str, Any],
    loaded: tuple[ScoreModel, dict[str, Any]],
    source: Path,
    given: str,
) -> dict:
    """Copy the network weights of ``loaded`` (``ckpt.load_model(source)``) into ``model``
    (fine-tuning a trained prior on other data or crops) and return what the run's config
    records of it: ``given`` (the name or path the user gave), the file's SHA-256 and its
    training steps.

    Raise InvdiffError naming the first part of :data:`INIT_PARTS` that differs."""
    src, src_config = loaded
    for key, options in INIT_PARTS.items():
        if src_config.get(key) != config.get(key):
            flags = ", ".join("--" + o.replace("_", "-") for o in options)
            raise InvdiffError(
                f"--init {given}: its {key} {src_config.get(key)} differs from this run's "
                f"{config.get(key)}; leave out {flags} (then the model's are used) or train "
                "without --init"
            )
    model.net.load_state_dict(src.net.state_dict())
    return {
        "model": given,
        "sha256": ckpt.file_sha256(source),
        "steps_done": src_config.get("training", {}).get("steps_done", -1),
    }


def train(
    images: np.ndarray,
    model: ScoreModel,
    config: dict[str, Any],
    out: str | Path,
    tc: TrainConfig,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
    weights: str = "ema",
    crop: CropConfig | None = None,
) -> ScoreModel:
    """Train ``model`` on ``images`` (N, C, H, W in [0, 1]); write ``out`` and ``out.train``.

    ``config`` is the checkpoint config (net, sde, image, data); training settings are added.
    ``weights`` picks what the model file holds: the EMA of the weights ("ema") or the last
    iterate ("raw"; better when a short run leaves the EMA dominated by early iterates). The model
    file is also written when a resumed run has nothing left to do, so ``--resume --weights raw``
    re-exports a finished run. Returns the EMA model.
    """
    if weights not in ("ema", "raw"):
        raise InvdiffError(f"--weights must be ema or raw, got {weights!r}")
    rank, world, local_rank = _dist()
    if tc.batch_size % world:
        raise InvdiffError(f"--batch-size {tc.batch_size} must be divisible by {world} processes")
    if world > 1 and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    model = model.to(device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(tc, k))
    config = {**config, "training": asdict(tc)}
    start, elapsed = 0, 0.0
    spath = state_path(out)
    parts = {"model": model, "ema": ema, "optimizer": opt, "scheduler": sched}
    if resume and spath.exists():
        start, elapsed = load_state(spath, config, device, **parts)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)
    data = torch.as_tensor(images)
    shard = slice(rank, None, world)

    def save(step: int, secs: float) -> None:
        training = {**asdict(tc), "steps_done": step, "wall_time_s": secs, "weights": weights}
        meta = {**config, "training": training}
        net_weights = ema.module.net if weights == "ema" else model.net
        ckpt.save(out, ckpt.model_payload(meta, net_weights.state_dict()))
        save_state(spath, config, step, secs, **parts)

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    t0 = time.perf_counter() - elapsed
    columns = (
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.2f} steps/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress or rank != 0) as bar:
        task = bar.add_task("train", total=tc.steps, completed=start, loss=float("nan"), rate=0.0)
        ema_loss, tick = None, time.perf_counter()
        for step in range(start, tc.steps):
            x0, t, z = draw_batch(data, model.sde, tc.batch_size, tc.seed, step, tc, crop)
            x0, t, z = x0[shard].to(device), t[shard].to(device), z[shard].to(device)
            loss = dsm_loss(net, model, x0, t, z)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            sched.step()
            ema.update_parameters(model)
            ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
            now = time.perf_counter()
            bar.update(task, advance=1, loss=ema_loss, rate=1.0 / max(now - tick, 1e-9))
            tick = now
            if (step + 1) % tc.ckpt_every == 0 or step + 1 == tc.steps:
                if rank == 0:
                    secs = time.perf_counter() - t0
                    save(step + 1, secs)
                    if not progress:
                        print(
                            f"step {step + 1}/{tc.steps}  loss {ema_loss:.4f}  "
                            f"{(step + 1 - start) / max(secs - elapsed, 1e-9):.2f} steps/s",
                            flush=True,
                        )
                if world > 1:
                    torch.distributed.barrier()
    if start >= tc.steps and rank == 0:  # nothing left to train: re-export the model file
        save(start, elapsed)
    return ema.module.eval()
