"""Write a model file with the raw (last-iterate) weights of a training state.

    python recipes/export_raw.py runs/general.pt runs/general.pt.train runs/general_raw.pt

Used to evaluate a run part-way (benchmarks/results/tune_*.md): early in a run the EMA of the
weights still carries the initial weights (0.999^k of them after k steps).
"""

from __future__ import annotations

import sys

from invdiff.core import checkpoint as ckpt


def main() -> None:
    model, state, out = sys.argv[1:4]
    payload = ckpt.load(model, ckpt.MODEL_FORMAT)
    st = ckpt.load(state, ckpt.STATE_FORMAT)
    weights = {k[len("net.") :]: v for k, v in st["model"].items() if k.startswith("net.")}
    payload["config"]["training"]["steps_done"] = int(st["step"])
    payload["config"]["training"]["weights"] = "raw"
    ckpt.save(out, ckpt.model_payload(payload["config"], weights))
    print(f"wrote {out}: raw weights of step {st['step']}")


if __name__ == "__main__":
    main()
