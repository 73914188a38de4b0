"""Network preconditioning: EDM and noise prediction mean the same thing (Karras et al. 2022)."""

from __future__ import annotations

import pytest
import torch

from invdiff.core.nets import UNet, UNetConfig
from invdiff.core.score import ScoreModel
from invdiff.core.sde import VESDE, VPSDE, bc


def _model(precond, sde):
    torch.manual_seed(0)  # initial weights only
    net = UNet(UNetConfig(base=8, mult=(1, 2), mid_attention=False, norm=False))
    for p in net.parameters():  # non-zero output so that the test is not trivial
        torch.nn.init.normal_(p, std=0.05)
    return ScoreModel(net, sde, sigma_data=0.3, precond=precond).double()


@pytest.mark.parametrize("precond", ["eps", "edm"])
@pytest.mark.parametrize("sde", [VESDE(0.002, 80.0), VPSDE()], ids=["ve", "vp"])
def test_a_perfect_output_denoises_exactly_and_gives_tweedies_score(precond, sde):
    """If the network output equals target(x0, z, t), D(x_t) = x0 and the score is Tweedie's."""
    model = _model(precond, sde)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64)
    z = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0.05, 0.4, 0.9], dtype=torch.float64)
    alpha, sigma = sde.coefficients(t)
    xt = bc(alpha, x0) * x0 + bc(sigma, x0) * z
    perfect = model.target(x0, z, t)
    model.forward = lambda x, tt: perfect  # type: ignore[method-assign]
    torch.testing.assert_close(model.denoise(xt, t), x0)
    torch.testing.assert_close(model.score(xt, t), -z / bc(sigma, z))


@pytest.mark.parametrize("shape", [(16, 16), (13, 22), (37, 31)])
def test_any_image_size_is_padded_and_cropped_back(shape):
    model = _model("edm", VESDE(0.002, 80.0))
    x = torch.rand(2, 1, *shape, dtype=torch.float64)
    with torch.no_grad():
        s = model.score(x, torch.tensor([0.2, 0.7], dtype=torch.float64))
    assert s.shape == x.shape and torch.isfinite(s).all()


def test_the_network_is_local_so_a_crop_sees_the_same_score_away_from_its_border():
    """No normalisation, no attention: the score of a crop equals the crop of the whole-image
    score away from the crop's border (the receptive field), so crops train whole images."""
    model = _model("edm", VESDE(0.002, 80.0))
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 1, 64, 64, generator=g, dtype=torch.float64)
    t = torch.tensor([0.5], dtype=torch.float64)
    with torch.no_grad():
        whole = model.score(x, t)
        crop = model.score(x[..., 16:48, 16:48], t)
    # The tiny net (2 levels, 3x3 convs) sees about 12 px; 10 px from the border and in.
    torch.testing.assert_close(crop[..., 10:-10, 10:-10], whole[..., 26:38, 26:38])
    assert not torch.allclose(crop[..., :2, :2], whole[..., 16:18, 16:18])


def test_sde_time_of_ratio_inverts_the_noise_to_signal_ratio():
    for sde in (VESDE(0.002, 80.0), VPSDE()):
        t = torch.tensor([0.01, 0.3, 0.77, 1.0], dtype=torch.float64)
        alpha, sigma = sde.coefficients(t)
        torch.testing.assert_close(sde.time_of_ratio(sigma / alpha), t, atol=1e-9, rtol=0)
