"""Checkpoint files: contents checksum, corruption refused, older files without one accepted."""

from __future__ import annotations

import pytest
import torch

from invdiff.core import checkpoint as ckpt
from invdiff.errors import InvdiffError


def _payload():
    weights = torch.arange(4096, dtype=torch.float32)  # a recognisable byte pattern
    return ckpt.model_payload({"net": "tiny"}, {"w": weights, "b": torch.zeros(3)})


def test_round_trip_keeps_every_tensor(tmp_path):
    path = tmp_path / "m.pt"
    ckpt.save(path, _payload())
    back = ckpt.load(path, ckpt.MODEL_FORMAT)
    assert back["config"] == {"net": "tiny"}
    assert torch.equal(back["state_dict"]["w"], _payload()["state_dict"]["w"])
    assert ckpt.CHECKSUM_KEY not in back


def test_flipped_bytes_inside_a_tensor_are_refused(tmp_path):
    path = tmp_path / "m.pt"
    ckpt.save(path, _payload())
    raw = bytearray(path.read_bytes())
    start = raw.find(torch.arange(100, 200, dtype=torch.float32).numpy().tobytes())
    assert start > 0
    raw[start : start + 4096] = bytes(4096)  # 4 KiB of zeros inside the weights
    path.write_bytes(bytes(raw))
    with pytest.raises(InvdiffError, match="corrupt"):
        ckpt.load(path, ckpt.MODEL_FORMAT)


def test_files_written_before_checksums_still_load(tmp_path):
    path = tmp_path / "old.pt"
    torch.save(_payload(), path)  # no checksum key
    assert ckpt.load(path, ckpt.MODEL_FORMAT)["config"] == {"net": "tiny"}


def test_digest_depends_on_values_and_names():
    a = ckpt.tensor_digest({"w": torch.ones(3)})
    assert a == ckpt.tensor_digest({"w": torch.ones(3)})
    assert a != ckpt.tensor_digest({"w": torch.ones(3) * 2})
    assert a != ckpt.tensor_digest({"v": torch.ones(3)})


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    import os
    import subprocess
    import sys

    from invdiff.atomic import atomic_path

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stale = tmp_path / f".out.h5.{dead}.abc123.tmp"
    live = tmp_path / f".out.h5.{os.getpid()}.def456.tmp"
    other = tmp_path / ".out.h5.notapid.tmp"
    for f in (stale, live, other):
        f.write_bytes(b"partial")
    with atomic_path(tmp_path / "out.h5") as tmp:
        tmp.write_bytes(b"done")
    assert (tmp_path / "out.h5").read_bytes() == b"done"
    assert not stale.exists() and live.exists() and other.exists()


@pytest.mark.parametrize("name", ["general", "rgb32"])
def test_loaded_models_run_nhwc_and_score_and_differentiate_as_nchw(name):
    import copy

    model, config = ckpt.load_model(ckpt.resolve_model(name))
    nchw = copy.deepcopy(model).to_channels_last(False)

    def wide_conv(m):  # one with several input channels: its NCHW and NHWC layouts differ
        return next(p for p in m.net.parameters() if p.ndim == 4 and p.shape[1] > 1)

    assert wide_conv(model).is_contiguous(memory_format=torch.channels_last)
    assert not wide_conv(model).is_contiguous()
    assert wide_conv(nchw).is_contiguous()
    c = config["image"]["channels"]
    x = torch.rand(2, c, 37, 45, generator=torch.Generator().manual_seed(0))  # padded sides
    t = torch.tensor([0.3, 0.6])
    out, grads = [], []
    for m in (model, nchw):
        xg = x.clone().requires_grad_(True)
        s = m.score(xg, t)
        grads.append(torch.autograd.grad((s * s).sum(), xg)[0])
        out.append(s.detach())
    assert out[0].is_contiguous()  # NCHW out of the NHWC network
    for fast, ref in (out, grads):  # (NHWC, NCHW) scores, then their gradients
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    # what a model file stores is NCHW whatever the live layout (torch.save keeps strides)
    stored = ckpt.model_payload(config, model.net.state_dict())["state_dict"]
    assert not all(v.is_contiguous() for v in model.net.state_dict().values())
    assert all(v.is_contiguous() for v in stored.values())
    assert ckpt.tensor_digest(stored) == ckpt.tensor_digest(nchw.net.state_dict())
