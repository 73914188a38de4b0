"""The engine benchmark's measurements run on a tiny model (they once broke unnoticed)."""

from __future__ import annotations

import torch

from benchmarks import bench_engine
from benchmarks.harness_config import tiny_model


def test_train_and_sample_speed_run_and_restore_the_cpu_layout():
    model, _ = tiny_model(16)
    model.image_shape = (1, 16)
    model.to_channels_last(True).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    row = bench_engine.train_speed(model, batch=2, steps=1)
    assert row["batch"] == 2 and row["steps_per_s"] > 0
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # trained
    conv = next(
        m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
    )
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.training
    sampled = bench_engine.sample_speed(model, batch=2, steps=2)
    assert sampled["nfe"] > 0
