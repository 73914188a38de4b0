"""Training: DSM learns a known score, resume is exact (also after SIGKILL), checkpoints are safe,
and the 2-process DDP run matches the single-process one."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from invdiff.core import checkpoint as ckpt
from invdiff.core.sde import VPSDE, bc
from invdiff.errors import InvdiffError
from invdiff.training.train import dsm_loss, state_path

TINY = ["--base", "8", "--mult", "1,2", "--threads", "1", "--no-progress", "--batch-size", "4"]


# DSM on a 2-D mixture ---------------------------------------------------------------------------

MEANS = torch.tensor([[-1.0, -0.5], [1.0, 0.5]])
STD = 0.3


def mixture_score(sde, x, t):
    """Exact score of an equal mixture of N(mu_k, STD^2 I) diffused to time t."""
    alpha, sigma = sde.coefficients(t)
    var = alpha**2 * STD**2 + sigma**2  # (B,)
    d = x[:, None, :] - alpha[:, None, None] * MEANS[None]  # (B, K, 2)
    logw = torch.softmax(-(d**2).sum(-1) / (2 * var[:, None]), dim=1)  # responsibilities
    return -(logw[..., None] * d).sum(1) / var[:, None]


class ToyEps(nn.Module):
    """An MLP predicting the noise z from (x_t, t) (the 'eps' preconditioning's target)."""

    def __init__(self, sde=None):
        super().__init__()
        self.sde = sde
        self.net = nn.Sequential(
            nn.Linear(3, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2)
        )

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], 1))

    def target(self, x0, z, t):
        return z


def score_error(model, sde, gen):
    """E ||sigma_t (s_theta - s_true)||^2 over t ~ U(0.05, 1) and x_t ~ p_t."""
    n = 4000
    k = torch.randint(2, (n,), generator=gen)
    x0 = MEANS[k] + STD * torch.randn(n, 2, generator=gen)
    t = 0.05 + 0.95 * torch.rand(n, generator=gen)
    alpha, sigma = sde.coefficients(t)
    xt = bc(alpha, x0) * x0 + bc(sigma, x0) * torch.randn(n, 2, generator=gen)
    with torch.no_grad():
        learned = -model(xt, t) / sigma[:, None]
    return float(((learned - mixture_score(sde, xt, t)) * sigma[:, None]).pow(2).sum(1).mean())


def test_dsm_learns_the_score_of_a_mixture():
    torch.manual_seed(0)  # initial weights only
    sde = VPSDE()
    model, gen = ToyEps(sde), torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = score_error(model, sde, torch.Generator().manual_seed(1))
    losses = []
    for _ in range(600):
        k = torch.randint(2, (256,), generator=gen)
        x0 = MEANS[k] + STD * torch.randn(256, 2, generator=gen)
        t = sde.t_min + (1 - sde.t_min) * torch.rand(256, generator=gen)
        loss = dsm_loss(model, model, x0, t, torch.randn(256, 2, generator=gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = score_error(model, sde, torch.Generator().manual_seed(1))
    assert sum(losses[-50:]) / 50 < 0.8 * sum(losses[:50]) / 50
    # The DSM optimum is the true score; E||sigma s||^2 ~ 1, so 0.05 is a 5 % residual.
    assert after < 0.05 < before, (before, after)


# Resume, SIGKILL, checkpoints -------------------------------------------------------------------


def _train(runner, data, out, steps, *extra):
    from invdiff.cli import app

    args = ["train", data, "--out", str(out), "--steps", str(steps), "--ckpt-every", "1", *TINY]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output


def _weights(path):
    return ckpt.load(state_path(path), ckpt.STATE_FORMAT)["model"]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_reaches_the_same_weights(tiny_data, tmp_path):
    from typer.testing import CliRunner

    runner = CliRunner()
    _train(runner, tiny_data, tmp_path / "full.pt", 6)
    _train(runner, tiny_data, tmp_path / "part.pt", 3)
    _train(runner, tiny_data, tmp_path / "part.pt", 6, "--resume")
    _assert_same(_weights(tmp_path / "full.pt"), _weights(tmp_path / "part.pt"))
    # The model files (EMA weights) agree too, and load as models.
    a, _ = ckpt.load_model(tmp_path / "full.pt")
    b, cfg = ckpt.load_model(tmp_path / "part.pt")
    _assert_same(a.state_dict(), b.state_dict())
    assert cfg["training"]["steps_done"] == 6


def test_init_starts_from_a_models_weights_and_refuses_another_network(tiny_data, tmp_path):
    """--init copies a model file's weights (fine-tuning) and records the file, its network and
    SDE options coming from the file unless given; a network or SDE given that differs from the
    file's, or a missing file, is a one-line error before training."""
    from typer.testing import CliRunner

    from invdiff.cli import app

    runner = CliRunner()
    own = ["--sigma-min", "0.02", "--res-blocks", "2"]  # not the defaults: must come from a.pt
    _train(runner, tiny_data, tmp_path / "a.pt", 3, "--seed", "1", *own)  # fresh.pt has seed 0
    source, source_cfg = ckpt.load_model(tmp_path / "a.pt")
    slow = ["--lr", "1e-12", "--steps", "1", "--ckpt-every", "1"]  # barely moves the weights
    bare = ["--threads", "1", "--no-progress", "--batch-size", "4", *slow]  # no network options
    r = runner.invoke(
        app,
        ["train", tiny_data, "--out", str(tmp_path / "tuned.pt"), "--init", str(tmp_path / "a.pt")]
        + bare,
    )
    assert r.exit_code == 0, r.output
    _train(runner, tiny_data, tmp_path / "fresh.pt", 1, *slow, *own)
    want = source.net.state_dict()
    for name, weights in [("tuned", 1e-6), ("fresh", None)]:
        got = _weights(tmp_path / f"{name}.pt")
        gap = max(float((got[f"net.{k}"] - v).abs().max()) for k, v in want.items())
        assert gap < weights if weights else gap > 1e-3, (name, gap)
    _, cfg = ckpt.load_model(tmp_path / "tuned.pt")
    assert all(cfg[k] == source_cfg[k] for k in ("net", "sde", "precond"))
    assert cfg["init"] == {
        "model": str(tmp_path / "a.pt"),
        "sha256": ckpt.file_sha256(tmp_path / "a.pt"),
        "steps_done": 3,
    }
    base = ["train", tiny_data, *bare]
    for extra, words in [
        (["--base", "16"], ["--init", "net", "differs"]),
        (["--sigma-min", "0.05"], ["--init", "sde", "differs"]),
        (["--init", "nosuch"], ["--init nosuch not found"]),
    ]:
        init = [] if "--init" in extra else ["--init", str(tmp_path / "a.pt")]
        out = tmp_path / "bad.pt"
        r = runner.invoke(app, [*base, "--out", str(out), *init, *extra])
        assert r.exit_code != 0 and "Traceback" not in r.output, r.output
        assert all(w in r.output for w in words), r.output
        assert not out.exists()


def test_a_compact_state_halves_the_file_and_resumes_close_to_the_full_run(tiny_data, tmp_path):
    """compact_state (float32 weights, bfloat16 EMA and second moment, no first moment) resumes
    to weights far closer to the uninterrupted run than the training moved them meanwhile (the
    dropped momentum costs about 10 steps' worth of it: 0.29 of the distance after 5 steps)."""
    from typer.testing import CliRunner

    from invdiff.training.train import compact_state

    runner = CliRunner()
    _train(runner, tiny_data, tmp_path / "full.pt", 25)
    _train(runner, tiny_data, tmp_path / "part.pt", 5)
    half = state_path(tmp_path / "part.pt")
    at5 = _weights(tmp_path / "part.pt")
    before = half.stat().st_size
    compact_state(half, half)
    saved = ckpt.load(half, ckpt.STATE_FORMAT)
    assert half.stat().st_size < 0.6 * before
    assert saved["ema"]["module.net.out.weight"].dtype == torch.bfloat16
    assert all("exp_avg" not in m for m in saved["optimizer"]["state"].values())
    _train(runner, tiny_data, tmp_path / "part.pt", 25, "--resume")
    a, b = _weights(tmp_path / "full.pt"), _weights(tmp_path / "part.pt")
    assert all(v.dtype == torch.float32 for v in b.values())
    gap = sum((a[k] - b[k]).pow(2).sum() for k in a) ** 0.5
    moved = sum((a[k] - at5[k]).pow(2).sum() for k in a) ** 0.5
    assert 0 < gap < 0.25 * moved, (gap, moved)
    ema, _ = ckpt.load_model(tmp_path / "part.pt")  # the EMA came back as float32 and trained on
    assert all(v.dtype == torch.float32 for v in ema.state_dict().values() if v.is_floating_point())


def test_resume_is_exact_for_crop_training_with_edm_and_lognormal_noise(tiny_data, tmp_path):
    """The any-size recipe (crops, zoom, augmentation, EDM output, log-normal sigma) resumes to
    the same weights as an uninterrupted run."""
    from typer.testing import CliRunner

    runner = CliRunner()
    recipe = [
        "--crop",
        "8",
        "--precond",
        "edm",
        "--noise-dist",
        "lognormal",
        "--no-norm",
        "--no-mid-attention",
        "--sigma-min",
        "0.002",
        "--sigma-max",
        "80",
    ]
    _train(runner, tiny_data, tmp_path / "full.pt", 5, *recipe)
    _train(runner, tiny_data, tmp_path / "part.pt", 2, *recipe)
    _train(runner, tiny_data, tmp_path / "part.pt", 5, "--resume", *recipe)
    _assert_same(_weights(tmp_path / "full.pt"), _weights(tmp_path / "part.pt"))
    model, cfg = ckpt.load_model(tmp_path / "full.pt")
    assert cfg["image"]["any_size"] and cfg["crop"]["size"] == 8 and cfg["precond"] == "edm"
    x = torch.rand(2, 1, 21, 30)  # any size, odd sides included
    with torch.no_grad():
        assert model.score(x, torch.tensor([0.3, 0.6])).shape == x.shape


def test_learning_rate_anneal_is_a_cosine_from_lr_to_its_final_fraction():
    from invdiff.training.train import TrainConfig, lr_factor

    tc = TrainConfig(warmup=10, lr_decay_start=100, lr_decay_steps=50, lr_final=0.2)
    assert lr_factor(tc, 0) == pytest.approx(0.1) and lr_factor(tc, 99) == 1.0
    assert lr_factor(tc, 125) == pytest.approx(0.6)  # half-way: (1 + 0.2) / 2
    assert lr_factor(tc, 150) == pytest.approx(0.2) and lr_factor(tc, 10**6) == pytest.approx(0.2)
    factors = [lr_factor(tc, k) for k in range(100, 151)]
    assert all(a > b for a, b in zip(factors, factors[1:], strict=False))
    assert lr_factor(TrainConfig(warmup=10), 10**6) == 1.0  # no anneal by default


def test_an_anneal_added_on_resume_matches_an_annealed_run(tiny_data, tmp_path):
    """The anneal depends on the step alone: a constant-rate run resumed with an anneal that
    starts where it stopped reaches the weights of a run that had the anneal from the start."""
    from typer.testing import CliRunner

    runner = CliRunner()
    anneal = ["--lr-decay-start", "3", "--lr-decay-steps", "3", "--lr-final", "0.1"]
    _train(runner, tiny_data, tmp_path / "full.pt", 6, *anneal)
    _train(runner, tiny_data, tmp_path / "part.pt", 3)
    _train(runner, tiny_data, tmp_path / "part.pt", 6, "--resume", *anneal)
    _assert_same(_weights(tmp_path / "full.pt"), _weights(tmp_path / "part.pt"))
    _train(runner, tiny_data, tmp_path / "flat.pt", 6)
    flat, full = _weights(tmp_path / "flat.pt"), _weights(tmp_path / "full.pt")
    assert any(not torch.equal(flat[k], full[k]) for k in flat)  # the anneal changed the run


def test_sigkill_leaves_a_valid_checkpoint_and_resume_is_exact(tiny_data, tmp_path):
    from typer.testing import CliRunner

    steps = 60
    out = tmp_path / "killed.pt"
    cmd = [sys.executable, "-m", "invdiff", "train", tiny_data, "--out", str(out)]
    cmd += ["--steps", str(steps), "--ckpt-every", "1", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not state_path(out).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Whatever instant the kill hit, both files load.
    step = ckpt.load(state_path(out), ckpt.STATE_FORMAT)["step"]
    ckpt.load_model(out)
    if killed:
        assert step < steps
    runner = CliRunner()
    _train(runner, tiny_data, out, steps, "--resume")
    _train(runner, tiny_data, tmp_path / "straight.pt", steps)
    _assert_same(_weights(out), _weights(tmp_path / "straight.pt"))


def test_checkpoint_round_trip(tiny_model):
    model, config = ckpt.load_model(tiny_model)
    again = ckpt.build_model(config)
    again.net.load_state_dict(model.net.state_dict())
    x, t = torch.rand(2, 1, 16, 16), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        torch.testing.assert_close(again.eval().score(x, t), model.score(x, t))
    assert config["image"] == {"channels": 1, "size": 16, "range": [0.0, 1.0], "any_size": False}
    assert config["sde"]["name"] == "ve" and config["data"]["n"] == 32
    assert config["training"]["steps_done"] == 4


def _one_line_error(fn):
    with pytest.raises(InvdiffError) as err:
        fn()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_damaged_checkpoints_give_one_line_errors(tiny_model, tmp_path):
    data = Path(tiny_model).read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(os.urandom(4096))
    assert "truncated" in _one_line_error(lambda: ckpt.load_model(tmp_path / "cut.pt"))
    assert "corrupt" in _one_line_error(lambda: ckpt.load_model(tmp_path / "junk.pt"))
    assert "not an" in _one_line_error(lambda: ckpt.load_model(str(tiny_model) + ".train"))
    assert "not found" in _one_line_error(lambda: ckpt.load_model(tmp_path / "none.pt"))
    payload = ckpt.load(tiny_model, ckpt.MODEL_FORMAT)
    payload["config"]["net"]["base"] = 16  # architecture no longer matches the weights
    ckpt.save(tmp_path / "bad.pt", ckpt.model_payload(payload["config"], payload["state_dict"]))
    assert "does not match" in _one_line_error(lambda: ckpt.load_model(tmp_path / "bad.pt"))


def test_a_pickled_object_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    torch.save({"format": ckpt.MODEL_FORMAT, "config": "{}", "x": Evil()}, tmp_path / "evil.pt")
    assert "corrupt" in _one_line_error(lambda: ckpt.load_model(tmp_path / "evil.pt"))


# DDP ---------------------------------------------------------------------------------------------


def test_two_process_ddp_matches_one_process(tiny_data, tmp_path):
    from typer.testing import CliRunner

    steps = 3
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "invdiff", "train", tiny_data, "--out", str(tmp_path / "ddp.pt")]
    cmd += ["--steps", str(steps), "--ckpt-every", "1", *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    _train(CliRunner(), tiny_data, tmp_path / "one.pt", steps)
    a, b = _weights(tmp_path / "ddp.pt"), _weights(tmp_path / "one.pt")
    for k in a:  # gradients are averaged over ranks in another order: float32 round-off only
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert math.isfinite(float(sum(v.float().sum() for v in a.values())))


def test_resume_of_a_finished_run_re_exports_raw_weights(tiny_data, tmp_path):
    from typer.testing import CliRunner

    runner = CliRunner()
    _train(runner, tiny_data, tmp_path / "m.pt", 3)
    _train(runner, tiny_data, tmp_path / "m.pt", 3, "--resume", "--weights", "raw")
    payload = ckpt.load(tmp_path / "m.pt", ckpt.MODEL_FORMAT)
    raw = {
        k[len("net.") :]: v for k, v in _weights(tmp_path / "m.pt").items() if k.startswith("net.")
    }
    _assert_same(payload["state_dict"], raw)
    assert payload["config"]["training"]["weights"] == "raw"
