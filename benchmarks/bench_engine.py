"""Core-engine benchmark: training and sampling speed, sampler overhead, denoising quality.

On the shipped default model (or ``--model``), at 64 x 64:
- training steps/s at batch 1 and 16 (DSM loss, backward, Adam, EMA);
- sampling images/s at batch 1 and 16 (PC: reverse diffusion + Langevin, ``--steps`` steps);
- time outside the network (sampler bookkeeping) as a fraction of sampling wall time;
- denoising PSNR at sigma = 0.05, 0.1, 0.5 on 256 held-out test phantoms (seed 2): the one-step
  Tweedie estimate E[x_0 | x_0 + sigma z] = x + sigma^2 score(x, t(sigma)) (Efron 2011), beside the
  noisy input and TV denoising (scikit-image Chambolle) with its weight tuned on 32 validation
  phantoms (seed 1);
- a PNG grid: 16 samples beside 16 real test phantoms.

    python benchmarks/bench_engine.py [--model M --threads 2 --steps 100]

Writes results/engine.json, results/engine.md and results/samples_vs_real.png.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: libgomp spin-waits otherwise

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

if not __package__:  # run by path: import benchmarks as a package, not its modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402
from invdiff.core import samplers  # noqa: E402
from invdiff.core.checkpoint import default_model_path, file_sha256, load_model  # noqa: E402
from invdiff.data.phantoms import SPLIT_SEEDS, make_phantoms  # noqa: E402
from invdiff.eval.metrics import psnr, summary  # noqa: E402
from invdiff.images import grid, save_png  # noqa: E402
from invdiff.training.train import dsm_loss  # noqa: E402

SIGMAS = (0.05, 0.1, 0.5)


class TimedScore:
    """A ScoreFn that records the wall time spent inside the network."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def score(self, x, t):
        start = time.perf_counter()
        out = self.fn.score(x, t)
        if out.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        return out


def train_speed(model, batch: int, steps: int = 6) -> dict:
    """Adam + EMA steps per second as ``invdiff train`` runs them (NCHW weights: training
    builds its model with build_model, which does not switch to NHWC)."""
    model.to_channels_last(False).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.999)
    )
    g = torch.Generator().manual_seed(0)
    c, s = model.image_shape[:2]
    times = []
    for k in range(steps + 2):
        x0 = torch.rand(batch, c, s, s, generator=g)
        t = 1e-5 + torch.rand(batch, generator=g)
        z = torch.randn(x0.shape, generator=g)
        start = time.perf_counter()
        loss = dsm_loss(model, model, x0, t, z)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update_parameters(model)
        if k >= 2:
            times.append(time.perf_counter() - start)
    model.to_channels_last(True).eval()  # back to what load_model gives on the CPU
    sec = float(np.median(times))
    return {"batch": batch, "s_per_step": sec, "steps_per_s": 1 / sec, "images_per_s": batch / sec}


def sample_speed(model, batch: int, steps: int) -> dict:
    timed = TimedScore(model)
    c, s = model.image_shape[:2]
    gens = samplers.generators_for(range(batch), "cpu")
    corrector = samplers.make_corrector("langevin", snr=0.16)
    start = time.perf_counter()
    res = samplers.pc_sample(timed, model.sde, (c, s, s), gens, corrector=corrector, steps=steps)
    wall = time.perf_counter() - start
    return {
        "batch": batch,
        "steps": steps,
        "nfe": res.nfe,
        "wall_s": wall,
        "images_per_s": batch / wall,
        "network_s": timed.seconds,
        "outside_network_fraction": 1 - timed.seconds / wall,
    }


def tv_denoise(noisy: np.ndarray, weight: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    return np.stack([denoise_tv_chambolle(im[0], weight=weight)[None] for im in noisy])


def denoising(model, n_test: int = 256, n_val: int = 32) -> list[dict]:
    size = model.image_shape[1]
    test, _ = make_phantoms(n_test, size, SPLIT_SEEDS["test"])
    val, _ = make_phantoms(n_val, size, SPLIT_SEEDS["val"])
    sde = model.sde
    rows = []
    for sigma in SIGMAS:
        g = torch.Generator().manual_seed(int(1000 * sigma))
        x = torch.as_tensor(test)
        noisy = x + sigma * torch.randn(x.shape, generator=g)
        # VE: sigma(t) = sigma_min (sigma_max / sigma_min)^t; the model's x_0 carries sigma_min.
        s_eff = math.sqrt(sigma**2 + sde.sigma_min**2)
        t = math.log(s_eff / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)
        outs = []
        with torch.no_grad():
            for k in range(0, n_test, 32):
                xb = noisy[k : k + 32]
                tt = torch.full((len(xb),), t)
                outs.append(xb + s_eff**2 * model.score(xb, tt))
        den = torch.cat(outs).clamp(0, 1).numpy()
        gv = torch.Generator().manual_seed(int(1000 * sigma) + 1)
        vnoisy = (torch.as_tensor(val) + sigma * torch.randn(val.shape, generator=gv)).numpy()
        grid_w = np.geomspace(0.01, 3.0, 16) * sigma
        scores = [float(psnr(tv_denoise(vnoisy, w).clip(0, 1), val).mean()) for w in grid_w]
        w_best = float(grid_w[int(np.argmax(scores))])
        tv = tv_denoise(noisy.numpy(), w_best).clip(0, 1)
        rows.append(
            {
                "sigma": sigma,
                "t": t,
                "noisy_psnr": summary(psnr(noisy.clamp(0, 1).numpy(), test)),
                "tv_weight_tuned_on_val": w_best,
                "tv_psnr": summary(psnr(tv, test)),
                "tweedie_psnr": summary(psnr(den, test)),
            }
        )
        print(rows[-1], flush=True)
    return rows


def sample_grid(model, steps: int, path) -> None:
    c, s = model.image_shape[:2]
    gens = samplers.generators_for(range(16), "cpu")
    corrector = samplers.make_corrector("langevin", snr=0.16)
    x = samplers.pc_sample(model, model.sde, (c, s, s), gens, corrector=corrector, steps=steps).x
    real, _ = make_phantoms(16, s, SPLIT_SEEDS["test"])
    both = np.concatenate([x.clamp(0, 1).numpy(), np.ones((4, c, s, s), np.float32), real])
    save_png(path, grid(both, ncols=4), scale=2)


def markdown(r: dict) -> str:
    m, tr = r["machine"], r["model"]["training"]
    lines = [
        "# Core engine (CPU)",
        "",
        f"Model `{r['model']['path']}` (sha256 {r['model']['sha256'][:12]}), "
        f"{r['model']['parameters'] / 1e6:.2f} M parameters, trained {tr.get('steps_done')} steps "
        f"in {tr.get('wall_time_s', 0) / 3600:.2f} h. Machine: {m['processor']}, {m['cpu_count']} "
        f"cores, {m['torch_threads']} torch threads, torch {m['torch']}, load average at start "
        f"{m['load_average_at_start']}. Made by `python benchmarks/bench_engine.py`.",
        "",
        "| batch | training steps/s | training images/s | sampling images/s "
        f"(PC, {r['steps']} steps) | NFE | time outside the network |",
        "|---|---|---|---|---|---|",
    ]
    for t, s in zip(r["train"], r["sample"], strict=True):
        lines.append(
            f"| {t['batch']} | {t['steps_per_s']:.2f} | {t['images_per_s']:.1f} | "
            f"{s['images_per_s']:.3f} | {s['nfe']} | {100 * s['outside_network_fraction']:.1f} % |"
        )
    lines += [
        "",
        f"Denoising PSNR (dB, mean ± std over {r['n_test']} test phantoms, seed 2): one Tweedie "
        "step of the score model against the noisy input and TV denoising with its weight tuned "
        "on 32 validation phantoms (seed 1).",
        "",
        "| sigma | noisy | TV (tuned) | invdiff Tweedie |",
        "|---|---|---|---|",
    ]
    for d in r["denoising"]:
        cells = [d[k] for k in ("noisy_psnr", "tv_psnr", "tweedie_psnr")]
        row = " | ".join(f"{c['mean']:.2f} ± {c['std']:.2f}" for c in cells)
        lines.append(f"| {d['sigma']} | {row} |")
    lines += ["", "![samples (top) and real test phantoms (bottom)](samples_vs_real.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = args.model or default_model_path()
    model, config = load_model(path)
    image = config["image"]
    model.image_shape = (image["channels"], image["size"], image["size"])
    report = {
        "machine": machine(args.threads),
        "model": {
            "path": str(os.path.relpath(path)),
            "sha256": file_sha256(path),
            "parameters": sum(p.numel() for p in model.parameters()),
            "training": config["training"],
        },
        "steps": args.steps,
        "n_test": 256,
    }
    report["denoising"] = denoising(model)
    sample_grid(model, args.steps, RESULTS / "samples_vs_real.png")
    report["sample"] = [sample_speed(model, b, args.steps) for b in (1, 16)]
    report["train"] = [train_speed(model, b) for b in (1, 16)]
    write_results("engine", report, markdown(report))


if __name__ == "__main__":
    main()
