"""A compact UNet in the DDPM++ family (Ho et al. 2020; Song et al. 2021, Appendix H).

Residual blocks with GroupNorm and SiLU, the noise level injected into every block through a
sinusoidal embedding and an MLP, optional self-attention at chosen resolutions and in the middle,
skip connections between matching resolutions, and a zero-initialised output convolution. The
network predicts the normalised noise; :class:`invdiff.core.score.ScoreModel` turns that into a
score.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet`; stored in every checkpoint."""

    channels: int = 1  # image channels (1 gray, 3 RGB)
    base: int = 32  # feature channels at full resolution
    mult: tuple[int, ...] = (1, 2, 2, 2)  # channel multiplier per resolution level
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = ()  # feature-map sizes with self-attention
    mid_attention: bool = True
    dropout: float = 0.0
    emb_dim: int = 0  # 0: 4 * base
    norm: bool = True  # GroupNorm in every block; False: none (statistics then do not depend on
    # the image size, so a network trained on crops behaves the same on whole images)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mult"], d["attn_resolutions"] = list(self.mult), list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        d = dict(d)
        d["mult"], d["attn_resolutions"] = tuple(d["mult"]), tuple(d["attn_resolutions"])
        return cls(**d)

    @property
    def downsampling(self) -> int:
        """Return the factor image sizes must be divisible by."""
        return 2 ** (len(self.mult) - 1)


def _groups(c: int) -> int:
    return math.gcd(c, 8)


def _norm(c: int, on: bool) -> nn.Module:
    return nn.GroupNorm(_groups(c), c) if on else nn.Identity()


def timestep_embedding(c_noise: Tensor, dim: int) -> Tensor:
    """Embed a scalar noise condition per sample with sines and cosines (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=c_noise.device) / half)
    args = 1000 * c_noise.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1).to(c_noise.dtype)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the embedding added in between and a 1x1 skip."""

    def __init__(self, cin: int, cout: int, emb: int, dropout: float, norm: bool = True) -> None:
        super().__init__()
        self.norm1 = _norm(cin, norm)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.norm2 = _norm(cout, norm)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(nn.functional.silu(self.norm2(h))))
        return (self.skip(x) + h) / math.sqrt(2)


class Attention(nn.Module):
    """Single-head self-attention over pixels, residual."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(c), c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        # Plain matmul attention: faster than the fused CPU kernel's backward here.
        a = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)
        o = (v @ a.transpose(1, 2)).reshape(b, c, h, w)
        return (x + self.out(o)) / math.sqrt(2)


class UNet(nn.Module):
    """Map (x, c_noise) of shapes (B, C, H, W), (B,) to a tensor shaped like x."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        emb = cfg.emb_dim or 4 * cfg.base
        self.emb = nn.Sequential(nn.Linear(cfg.base, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.inp = nn.Conv2d(cfg.channels, cfg.base, 3, padding=1)
        chans = [cfg.base * m for m in cfg.mult]
        self.down, skips, c = nn.ModuleList(), [cfg.base], cfg.base
        for level, cout in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(c, cout, emb, cfg.dropout, cfg.norm))
                c = cout
                skips.append(c)
            down = nn.Conv2d(c, c, 3, stride=2, padding=1) if level < len(chans) - 1 else None
            if down is not None:
                skips.append(c)
            self.down.append(nn.ModuleDict({"blocks": blocks, "down": down or nn.Identity()}))
        self.mid1 = ResBlock(c, c, emb, cfg.dropout, cfg.norm)
        self.mid_attn = Attention(c) if cfg.mid_attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb, cfg.dropout, cfg.norm)
        self.up = nn.ModuleList()
        for level, cout in reversed(list(enumerate(chans))):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(c + skips.pop(), cout, emb, cfg.dropout, cfg.norm))
                c = cout
            up = nn.Conv2d(c, c, 3, padding=1) if level > 0 else None
            self.up.append(nn.ModuleDict({"blocks": blocks, "up": up or nn.Identity()}))
        self.attn = nn.ModuleDict()  # keyed "down{level}" / "up{level}" where used
        self.out_norm = _norm(c, cfg.norm)
        self.out = nn.Conv2d(c, cfg.channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self._attn_channels = dict(zip(range(len(chans)), chans, strict=True))

    def _maybe_attn(self, key: str, h: Tensor) -> Tensor:
        return self.attn[key](h) if key in self.attn else h

    def build_attention(self, image_size: int) -> None:
        """Create the attention layers for the resolutions in the config at this image size."""
        for level, c in self._attn_channels.items():
            if image_size // 2**level in self.config.attn_resolutions:
                self.attn[f"down{level}"] = Attention(c)
                self.attn[f"up{level}"] = Attention(c)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        if x.shape[-1] % self.config.downsampling or x.shape[-2] % self.config.downsampling:
            raise ValueError(
                f"image size {tuple(x.shape[-2:])} must be divisible by {self.config.downsampling}"
            )
        emb = self.emb(timestep_embedding(c_noise, self.config.base))
        h = self.inp(x)
        hs = [h]
        for level, stage in enumerate(self.down):
            for block in stage["blocks"]:
                h = self._maybe_attn(f"down{level}", block(h, emb))
                hs.append(h)
            if not isinstance(stage["down"], nn.Identity):
                h = stage["down"](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        n = len(self.up)
        for i, stage in enumerate(self.up):
            level = n - 1 - i
            for block in stage["blocks"]:
                h = self._maybe_attn(f"up{level}", block(torch.cat([h, hs.pop()], 1), emb))
            if not isinstance(stage["up"], nn.Identity):
                h = stage["up"](nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(nn.functional.silu(self.out_norm(h)))


def build_unet(config: UNetConfig, image_size: int) -> UNet:
    """Build a UNet for square images of ``image_size`` pixels."""
    if image_size % config.downsampling:
        raise ValueError(f"image size {image_size} must be divisible by {config.downsampling}")
    net = UNet(config)
    net.build_attention(image_size)
    return net
