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


def test_loaded_models_run_nhwc_and_score_as_nchw():
    import copy

    model, _ = ckpt.load_model(None)
    conv = next(p for p in model.net.parameters() if p.ndim == 4)
    assert model.channels_last and conv.is_contiguous(memory_format=torch.channels_last)
    nchw = copy.deepcopy(model).to_channels_last(False)
    assert conv.is_contiguous(memory_format=torch.channels_last)  # the copy left model alone
    assert next(p for p in nchw.net.parameters() if p.ndim == 4).is_contiguous()
    x = torch.rand(2, 1, 37, 45, generator=torch.Generator().manual_seed(0))  # padded sides too
    t = torch.tensor([0.3, 0.6])
    with torch.no_grad():
        fast, ref = model.score(x, t), nchw.score(x, t)
    assert fast.shape == ref.shape and fast.is_contiguous()
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
