"""Checkpoints: weights plus the configuration that rebuilds the model, loaded without pickled code.

A model file is ``torch.save`` of a plain dict ``{"format", "config" (JSON text), "state_dict"}``;
it is read back with ``torch.load(weights_only=True)``, which refuses anything but tensors and
plain containers. Every write is atomic (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from invdiff.atomic import atomic_path
from invdiff.core.nets import UNetConfig, build_unet
from invdiff.core.score import ScoreModel
from invdiff.core.sde import sde_from_config
from invdiff.errors import InvdiffError

MODEL_FORMAT = "invdiff-score-model/1"
STATE_FORMAT = "invdiff-train-state/1"
DEFAULT_MODEL = "general.pt"


def default_model_path() -> Path:
    """Return the path of the model shipped inside the package."""
    return Path(str(resources.files("invdiff") / "models" / DEFAULT_MODEL))


def shipped_models() -> list[str]:
    """Return the names of the score models shipped inside the package (file stems)."""
    folder = Path(str(resources.files("invdiff") / "models"))
    return sorted(p.stem for p in folder.glob("*.pt") if p.stem != "lesion_classifier")


def resolve_model(name_or_path: str | Path | None, flag: str = "--model") -> Path:
    """Return the checkpoint path of a shipped model's name, or the path given; None: default.
    ``flag`` is the option the error message names."""
    if name_or_path is None:
        return default_model_path()
    text = str(name_or_path)
    if text in shipped_models():
        return Path(str(resources.files("invdiff") / "models" / f"{text}.pt"))
    path = Path(text)
    if not path.is_file():
        raise InvdiffError(
            f"{flag} {text} not found: no such file and no shipped model of that name; "
            f"shipped: {', '.join(shipped_models())}"
        )
    return path


CHECKSUM_KEY = "tensor_sha256"


def tensor_digest(obj: Any) -> str:
    """Return the SHA-256 of every tensor and plain value in ``obj`` (nested dicts and lists,
    keys sorted), so a checkpoint whose bytes changed after it was written is detected even where
    the file format itself does not check them."""
    h = hashlib.sha256()

    def walk(o: Any, where: str) -> None:
        if isinstance(o, dict):
            for k in sorted(o, key=str):
                if k != CHECKSUM_KEY:
                    walk(o[k], f"{where}/{k}")
        elif isinstance(o, list | tuple):
            for i, v in enumerate(o):
                walk(v, f"{where}/{i}")
        elif isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous().reshape(-1)
            h.update(f"{where}:{t.dtype}:{tuple(o.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        else:
            h.update(f"{where}={o!r}".encode())

    walk(obj, "")
    return h.hexdigest()


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` with torch.save, atomically, with a checksum of its contents."""
    payload = {**payload, CHECKSUM_KEY: tensor_digest(payload)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path: str | Path, fmt: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint of format ``fmt`` safely; one-line InvdiffError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise InvdiffError(f"checkpoint {path} not found; check --model or train one first")
    try:
        with warnings.catch_warnings():  # torch's (e.g. on a pickle protocol): a second line
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for damaged files
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise InvdiffError(
            f"checkpoint {path} is truncated, corrupt or not a torch file ({reason}); "
            "re-create it with `invdiff train`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise InvdiffError(f"{path} is not an {fmt} checkpoint; pass a file written by invdiff")
    stored = payload.pop(CHECKSUM_KEY, None)  # files written before checksums have none
    if stored is not None and stored != tensor_digest(payload):
        raise InvdiffError(
            f"checkpoint {path} is corrupt: its contents do not match their checksum; "
            "re-create or restore it"
        )
    try:
        payload["config"] = json.loads(payload["config"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise InvdiffError(f"checkpoint {path} has no readable config; re-create it") from None
    return payload


def model_payload(config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Return the dict written to a model file."""
    return {
        "format": MODEL_FORMAT,
        "config": json.dumps(config, default=str),
        # NCHW whatever the live layout (NHWC after load_model): file bytes depend on values only
        "state_dict": {k: v.contiguous() for k, v in state_dict.items()},
    }


def build_model(config: dict[str, Any]) -> ScoreModel:
    """Build an untrained ScoreModel from a checkpoint config."""
    if config["image"]["channels"] != config["net"]["channels"]:
        raise ValueError("the image channels and the network's channels differ")
    net = build_unet(UNetConfig.from_dict(config["net"]), config["image"]["size"])
    return ScoreModel(
        net,
        sde_from_config(config["sde"]),
        config.get("sigma_data", 0.5),
        config.get("precond", "eps"),
    )


def load_model(
    path: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[ScoreModel, dict[str, Any]]:
    """Load a ScoreModel (default: the shipped one) in eval mode, and its config; on the CPU its
    weights are stored NHWC (:meth:`ScoreModel.to_channels_last`, measured faster there)."""
    path = Path(path) if path is not None else default_model_path()
    payload = load(path, MODEL_FORMAT, map_location=device)
    config = payload["config"]
    try:
        image = config["image"]  # a hand-edited size or channels of 0 would fail much later
        if not all(
            isinstance(image[k], int) and 1 <= image[k] <= 8192 for k in ("channels", "size")
        ):
            raise ValueError(f"image channels and size must be integers in [1, 8192], got {image}")
        model = build_model(config)
        model.net.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0][:120]
        raise InvdiffError(
            f"checkpoint {path} does not match its stored architecture ({first}); re-create it"
        ) from None
    model = model.to(device).eval()
    return model.to_channels_last(torch.device(device).type == "cpu"), config


def file_sha256(path: str | Path) -> str:
    """Return the SHA-256 of a file (model identity in outputs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
