"""Where the model runs and what it starts from: the model side's settings, apart from the store's."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    device: str = "auto"  # auto | cpu | cuda
    weights: str = "coco"  # round-0 weights: coco (torchvision's, downloaded once) | none | PATH

    @property
    def coco_weights(self) -> str:
        """Where COCO weights come from once a round-0 version exists: the given file, else torchvision's."""
        return "coco" if self.weights == "none" else self.weights
