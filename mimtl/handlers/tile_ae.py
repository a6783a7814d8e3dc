"""What a T-AE inference run writes: the rebuilt film and its error, per input file."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from mimtl.handlers._common import OutputWriter, save_atomic

__all__ = ["ReconstructionWriter"]


class ReconstructionWriter(OutputWriter):
    """``reconstruction.csv`` (file, status, mae) and ``recon/<film>_recon.png`` of an inference run.

    ``mae`` is the mean absolute difference between the rebuilt film (``pred``, in [0, 1]) and the
    network's input (the film scaled to [0, 1] at the network grid). Failed files are rows with
    ``failed: <reason>``.

    Args:
        output_dir: where the files go.
        pred_key: the output key of the rebuilt film.
        save_images: write the PNGs.
        image_key: the batch key of the film.
        error_key: :class:`~mimtl.data.TolerantDataset`'s failure key.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        pred_key: str = "pred",
        save_images: bool = True,
        image_key: str = "image",
        error_key: str = "error",
    ) -> None:
        super().__init__(output_dir, image_key=image_key, error_key=error_key)
        self.pred_key = pred_key
        self.save_images = save_images
        self.rows: list[dict[str, Any]] = []

    def reset(self, engine: Any = None) -> None:
        super().reset(engine)
        self.rows = []

    def __call__(self, engine: Any) -> None:
        from PIL import Image

        for item, out, name, error in self.items(engine):
            if error:
                self.rows.append({"file": name, "status": self.failed_status(error), "mae": ""})
                continue
            pred = torch.as_tensor(out[self.pred_key]).detach().float().cpu()
            image = torch.as_tensor(out.get(self.image_key, item.get(self.image_key))).detach().float().cpu()
            self.rows.append({"file": name, "status": "ok", "mae": f"{(pred - image).abs().mean().item():.5f}"})
            if self.save_images:
                path = self.item_path(name, "_recon.png", folder="recon")
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.round(np.clip(np.asarray(pred[0]).T, 0, 1) * 255).astype(np.uint8)  # (x, y) -> rows = y
                save_atomic(path, lambda tmp, p=pixels: Image.fromarray(p).save(tmp, format="PNG"))

    def write(self, engine: Any = None) -> Any:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        return self.write_csv(self.table_path("reconstruction", ".csv"), self.rows, ["file", "status", "mae"])
