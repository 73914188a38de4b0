"""Geometry of operators defined by a 0/1 pixel mask (inpainting, k-space sampling): the mask is
what a measurement file stores as /mask, and a stored one replaces the options' mask."""

from __future__ import annotations

import torch


class MaskGeometry:
    """Mixin for an Operator with a ``mask`` tensor (H x W, 0/1) and a ``set_mask`` method."""

    def geometry(self) -> dict:
        """Return the 0/1 mask, stored as /mask (uint8)."""
        return {"mask": self.mask.detach().cpu().numpy().astype("uint8")}

    def set_geometry(self, arrays: dict, source: str) -> None:
        """Use a stored /mask (H x W, 0/1) instead of the one the options describe."""
        if arrays.get("mask") is not None:
            self.set_mask(torch.as_tensor(arrays["mask"]).float())
