"""invdiff.core.nets: the UNet's shapes at several sizes, GroupNorm on and off, attention by
resolution, deterministic construction, and its config as stored in checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from invdiff.core.nets import UNet, UNetConfig, build_unet, timestep_embedding

SMALL = {"base": 8, "mult": (1, 2, 2)}


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _randomise(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():  # the output convolution starts at zero: make it non-trivial
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("norm", [True, False], ids=["norm", "no_norm"])
@pytest.mark.parametrize("channels,hw", [(1, (8, 8)), (3, (16, 16)), (1, (12, 20)), (1, (32, 8))])
def test_output_is_shaped_like_the_input(channels, hw, norm):
    net = _randomise(UNet(UNetConfig(channels=channels, norm=norm, **SMALL)), 0)
    x = torch.rand(2, channels, *hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x, torch.tensor([0.1, 0.9]))
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0


def test_sizes_not_divisible_by_the_downsampling_are_refused():
    cfg = UNetConfig(**SMALL)
    assert cfg.downsampling == 4
    with pytest.raises(ValueError, match="divisible by 4"):
        build_unet(cfg, 18)
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet(cfg)(torch.zeros(1, 1, 16, 18), torch.zeros(1))


def test_a_new_network_outputs_zero():
    net = UNet(UNetConfig(**SMALL))  # zero-initialised output convolution
    out = net(torch.rand(2, 1, 16, 16), torch.tensor([0.3, 0.6]))
    assert torch.equal(out, torch.zeros_like(out))


def test_norm_off_removes_every_group_norm_outside_attention():
    def group_norms(cfg):
        return [m for m in UNet(cfg).modules() if isinstance(m, torch.nn.GroupNorm)]

    assert group_norms(UNetConfig(norm=True, mid_attention=False, **SMALL))
    assert not group_norms(UNetConfig(norm=False, mid_attention=False, **SMALL))
    assert len(group_norms(UNetConfig(norm=False, mid_attention=True, **SMALL))) == 1
    on = _n_params(UNet(UNetConfig(norm=True, **SMALL)))
    assert on > _n_params(UNet(UNetConfig(norm=False, **SMALL)))  # GroupNorm's affine weights


def test_attention_layers_follow_the_image_size():
    cfg = UNetConfig(attn_resolutions=(8,), **SMALL)
    at16, at32 = build_unet(cfg, 16), build_unet(cfg, 32)
    assert set(at16.attn) == {"down1", "up1"}  # 16 // 2 = 8 at level 1
    assert set(at32.attn) == {"down2", "up2"}  # 32 // 4 = 8 at level 2
    assert not build_unet(cfg, 64).attn and _n_params(at16) > _n_params(build_unet(cfg, 64))


def test_construction_is_deterministic_for_a_seed():
    cfg = UNetConfig(attn_resolutions=(8,), **SMALL)

    def built(seed):
        torch.manual_seed(seed)
        return build_unet(cfg, 16)

    a, b, c = built(0), built(0), built(1)
    assert _n_params(a) == _n_params(b) == _n_params(c)  # the count depends on the config only
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_config_round_trips_through_json():
    cfg = UNetConfig(channels=3, base=16, mult=(1, 2), attn_resolutions=(8, 4), norm=False)
    assert UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_timestep_embedding_is_sines_and_cosines_per_sample():
    emb = timestep_embedding(torch.tensor([0.0, 0.5]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    torch.testing.assert_close(emb[:, :4] ** 2 + emb[:, 4:] ** 2, torch.ones(2, 4))
