"""Time-conditional (noise-conditional) classifiers p_t(y | x_t) for classifier guidance.

Song et al. (ICLR 2021, Sec. 5 and App. I.1, class-conditional sampling): with a classifier
trained on x_t = alpha_t x_0 + sigma_t z from the SAME forward SDE as the prior,

    grad_x log p_t(x_t | y) = grad_x log p_t(x_t) + grad_x log p_t(y | x_t),

so adding the classifier's input gradient to the prior score samples p(x_0 | y). A scale s
(Dhariwal and Nichol, NeurIPS 2021) samples the tempered p_t(x_t) p_t(y | x_t)^s instead.

The network is the encoder half of the score UNet (:mod:`invdiff.core.nets` residual blocks with the
same sinusoidal noise embedding), global average pooling and a linear head. It sees x_t scaled
exactly as the score network does (c_in, c_noise of :class:`invdiff.core.score.ScoreModel`), so any
image size works and one classifier serves every t. Training: cross-entropy with
t ~ U(t_min, 1) (or t = t_min for a clean-image classifier), batches, times and noise of step k
drawn from a generator seeded by (seed, k) only.

Checkpoint: format ``invdiff-classifier/1``, the plain dict ``{format, config (JSON),
state_dict}`` of :mod:`invdiff.core.checkpoint`; the config stores the SDE it was trained for and
the SHA-256 of the score-model file whose SDE it took.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from invdiff.core import checkpoint as ckpt
from invdiff.core.nets import ResBlock, _groups, timestep_embedding
from invdiff.core.sde import SDE, bc, sde_from_config
from invdiff.errors import InvdiffError

CLASSIFIER_FORMAT = "invdiff-classifier/1"
DEFAULT_CLASSIFIER = "lesion_classifier.pt"


def default_classifier_path() -> Path:
    """Return the path of the lesion classifier shipped for the default phantom model."""
    return Path(str(resources.files("invdiff") / "models" / DEFAULT_CLASSIFIER))


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of :class:`ClassifierNet`; stored in every classifier checkpoint."""

    channels: int = 1
    num_classes: int = 2
    base: int = 16
    mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 1
    emb_dim: int = 0  # 0: 4 * base

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mult": list(self.mult)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        return cls(**{**d, "mult": tuple(d["mult"])})


class ClassifierNet(nn.Module):
    """Map (x, c_noise) of shapes (B, C, H, W), (B,) to logits (B, num_classes); any H, W."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = cfg = config
        emb = cfg.emb_dim or 4 * cfg.base
        self.emb = nn.Sequential(nn.Linear(cfg.base, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.inp = nn.Conv2d(cfg.channels, cfg.base, 3, padding=1)
        self.blocks, self.down, c = nn.ModuleList(), nn.ModuleList(), cfg.base
        for level, m in enumerate(cfg.mult):
            level_blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                level_blocks.append(ResBlock(c, cfg.base * m, emb, 0.0))
                c = cfg.base * m
            self.blocks.append(level_blocks)
            last = level == len(cfg.mult) - 1
            self.down.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.norm = nn.GroupNorm(_groups(c), c)
        self.head = nn.Linear(c, cfg.num_classes)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        emb = self.emb(timestep_embedding(c_noise, self.config.base))
        h = self.inp(x)
        for blocks, down in zip(self.blocks, self.down, strict=True):
            for block in blocks:
                h = block(h, emb)
            h = down(h)
        return self.head(nn.functional.silu(self.norm(h)).mean((2, 3)))


class NoiseClassifier(nn.Module):
    """p_t(y | x_t) for the diffusion ``sde``: logits, log-probabilities and input gradients."""

    def __init__(self, net: ClassifierNet, sde: SDE, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.net, self.sde, self.sigma_data = net, sde, float(sigma_data)

    @property
    def num_classes(self) -> int:
        return self.net.config.num_classes

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Return the logits of p_t(. | x_t); the input is scaled as the score network's is."""
        alpha, sigma = self.sde.coefficients(t)
        c_in = torch.rsqrt(alpha**2 * self.sigma_data**2 + sigma**2)
        return self.net(x * bc(c_in, x), 0.25 * torch.log(sigma / alpha))

    def log_prob(self, x: Tensor, t: Tensor, label: Tensor | int) -> Tensor:
        """Return log p_t(y = label | x_t) per sample, shape (B,); label: int, (1,) or (B,)."""
        logp = torch.log_softmax(self(x, t), dim=1)
        index = torch.as_tensor(label, device=x.device).long().reshape(-1)
        if index.numel() == 1:
            index = index.expand(len(x))
        if index.numel() != len(x) or bool(((index < 0) | (index >= self.num_classes)).any()):
            raise ValueError(
                f"labels {index.tolist()} do not fit a batch of {len(x)} and "
                f"{self.num_classes} classes; give one label in [0, {self.num_classes})"
            )
        return logp.gather(1, index[:, None]).squeeze(1)

    def input_gradient(self, x: Tensor, t: Tensor, label: Tensor | int) -> Tensor:
        """Return grad_x log p_t(y = label | x_t) by autograd (one backward pass)."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_prob(xg, t, label).sum(), xg)
        return grad


def classifier_payload(config: dict[str, Any], state_dict: dict[str, Tensor]) -> dict[str, Any]:
    """Return the dict written to a classifier file."""
    return {
        "format": CLASSIFIER_FORMAT,
        "config": json.dumps(config, default=str),
        "state_dict": state_dict,
    }


def build_classifier(config: dict[str, Any]) -> NoiseClassifier:
    """Build an untrained NoiseClassifier from a checkpoint config."""
    net = ClassifierNet(ClassifierConfig.from_dict(config["net"]))
    return NoiseClassifier(net, sde_from_config(config["sde"]), config.get("sigma_data", 0.5))


def load_classifier(
    path: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[NoiseClassifier, dict[str, Any]]:
    """Load a classifier (default: the shipped lesion classifier) in eval mode, and its config."""
    path = Path(path) if path is not None else default_classifier_path()
    payload = ckpt.load(path, CLASSIFIER_FORMAT, map_location=device)
    try:
        clf = build_classifier(payload["config"])
        clf.net.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0][:120]
        raise InvdiffError(
            f"classifier {path} does not match its stored architecture ({first}); "
            "re-create it with `invdiff train-classifier`"
        ) from None
    return clf.to(device).eval(), payload["config"]


def diffuse_batch(
    images: Tensor,
    labels: Tensor,
    sde: SDE,
    batch: int,
    seed: int,
    step: int,
    clean: bool,
    paired: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw (x_t, t, y) of one training step from the generator of (seed, step) alone.

    ``paired``: images 2k and 2k + 1 are twins that differ only in their class (e.g. the same
    phantom with and without a lesion, ``invdiff data phantoms --twins``); the batch holds
    batch / 2 whole pairs, and both twins get the same t and the same noise (common random
    numbers). The marginal law of (x_t, t, y), hence the minimiser p_t(y | x_t), is unchanged,
    but everything except the class cancels between the twins in the gradient, so a small lesion,
    otherwise a needle in a haystack of anatomy, becomes learnable: on clean 64 x 64 phantoms a
    small CNN left chance level after about 500 paired steps, while unpaired batches kept every
    classifier we tried at chance for 3000 steps (issue 6).
    """
    from invdiff.training.train import step_generator

    g = step_generator(seed, step)
    # Draw order (indices, times, noise) is fixed: resumed runs depend on it.
    draws = max(batch // 2, 1) if paired else batch  # independent draws; twins share theirs
    if paired:
        first = 2 * torch.randint(len(images) // 2, (draws,), generator=g)
        idx = torch.stack([first, first + 1], 1).reshape(-1)
    else:
        idx = torch.randint(len(images), (draws,), generator=g)
    u = torch.zeros(draws) if clean else torch.rand(draws, generator=g)
    z = torch.randn((draws, *images.shape[1:]), generator=g)
    if paired:
        u, z = u.repeat_interleave(2), z.repeat_interleave(2, 0)
    t = sde.t_min + (1 - sde.t_min) * u
    x0 = images[idx]
    alpha, sigma = sde.coefficients(t)
    xt = bc(alpha, x0) * x0 + bc(sigma, x0) * z
    return xt, t, labels[idx]


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Optimisation settings of :func:`train_classifier`; stored in the checkpoint."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    ema_decay: float = 0.99  # 0: no EMA
    clean: bool = False  # train at t = t_min only (a clean-image classifier)
    ckpt_every: int = 500
    seed: int = 0
    paired: bool = False  # batches of twins (see diffuse_batch)


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    clf: NoiseClassifier,
    config: dict[str, Any],
    out: str | Path,
    tc: ClassifierTrainConfig,
    device: str = "cpu",
    log=print,
    resume: bool = False,
) -> NoiseClassifier:
    """Minimise the cross-entropy of p_t(y | x_t) on diffused images; write ``out``.

    Every checkpoint also writes ``out.train`` (weights, EMA, optimiser, step), so ``resume``
    continues an interrupted run and, as for score models (:func:`invdiff.training.train.train`),
    reaches the same weights as an uninterrupted one: step k's batch depends on (seed, k) only.
    Returns the EMA classifier (the trained one when ``ema_decay`` is 0), in eval mode.
    """
    from invdiff.training.train import load_state, save_state, state_path

    data, y = torch.as_tensor(images), torch.as_tensor(labels).long()
    clf = clf.to(device).train()
    ema = None
    if tc.ema_decay > 0:
        avg = get_ema_multi_avg_fn(tc.ema_decay)
        ema = AveragedModel(clf, multi_avg_fn=avg, use_buffers=True)
    opt = torch.optim.AdamW(clf.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    config = {**config, "training": asdict(tc)}
    parts = {"model": clf, "optimizer": opt, **({"ema": ema} if ema is not None else {})}
    spath, start, elapsed = state_path(out), 0, 0.0
    if resume and spath.exists():
        keys = ("net", "sde", "image", "model")
        start, elapsed = load_state(spath, config, device, keys, **parts)
    t0, running = time.perf_counter() - elapsed, None
    best = ema.module if ema is not None else clf
    for step in range(start, tc.steps):
        xt, t, yb = diffuse_batch(
            data, y, clf.sde, tc.batch_size, tc.seed, step, tc.clean, tc.paired
        )
        logits = clf(xt.to(device), t.to(device))
        loss = nn.functional.cross_entropy(logits, yb.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update_parameters(clf)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % tc.ckpt_every == 0 or step + 1 == tc.steps:
            secs = time.perf_counter() - t0
            meta = {**config, "training": {**config["training"], "steps_done": step + 1}}
            meta["training"]["wall_time_s"] = round(secs, 1)
            ckpt.save(out, classifier_payload(meta, best.net.state_dict()))
            save_state(spath, config, step + 1, secs, **parts)
            rate = (step + 1 - start) / max(secs - elapsed, 1e-9)
            log(f"step {step + 1}/{tc.steps}  loss {running:.4f}  {rate:.2f} steps/s")
    return best.eval()


@torch.no_grad()
def accuracy(
    clf: NoiseClassifier,
    images: Tensor,
    labels: Tensor,
    t: float,
    generator: torch.Generator,
    batch: int = 64,
) -> float:
    """Return the fraction of images diffused to time t (fresh noise) classified correctly."""
    hits = 0
    for i in range(0, len(images), batch):
        x0 = images[i : i + batch]
        tt = torch.full((len(x0),), float(t), dtype=x0.dtype)
        alpha, sigma = clf.sde.coefficients(tt)
        xt = bc(alpha, x0) * x0 + bc(sigma, x0) * torch.randn(x0.shape, generator=generator)
        hits += int((clf(xt, tt).argmax(1) == labels[i : i + batch]).sum())
    return hits / len(images)
