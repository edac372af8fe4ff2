"""The preprocessing contract: the same pixels for training, calibration, evaluation and triage.

MedMNIST made PneumoniaMNIST by cropping the centre square of each X-ray and resizing it, so a
full-size image goes through :func:`to_model_pixels` (crop + area resize) and every batch through
:func:`normalize` ((x * scale - mean) / std) before it reaches a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects: square ``size`` input, one channel, scaled and standardised."""

    size: int = 28
    crop: str = "center-square"
    interpolation: str = "area"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = field(default=(0.5,))
    std: tuple[float, ...] = field(default=(0.5,))

    def __post_init__(self) -> None:
        if self.crop not in ("center-square", "none"):
            raise ValueError(f"unknown crop {self.crop!r}; expected 'center-square' or 'none'")
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; "
                             f"expected one of {sorted(_INTERPOLATION)}")
        if self.size < 1 or any(s <= 0 for s in self.std):
            raise ValueError("size must be >= 1 and std > 0")

    def as_dict(self) -> dict:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        known = {k: data[k] for k in ("size", "crop", "interpolation", "scale", "mean", "std")
                 if k in data}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)


def center_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of a (H, W) image (a view, no copy)."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top:top + side, left:left + side]


def to_model_pixels(gray: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """A (H, W) grayscale image -> (size, size) of the same dtype: centre crop, then resize."""
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    image = center_square(gray) if spec.crop == "center-square" else gray
    if image.shape == (spec.size, spec.size):
        return np.ascontiguousarray(image)
    return cv2.resize(image, (spec.size, spec.size), interpolation=_INTERPOLATION[spec.interpolation])


def normalize(batch: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """(N, H, W) pixels -> (N, 1, H, W) float32 model input."""
    if batch.ndim != 3:
        raise ValueError(f"expected a (N, H, W) batch, got shape {batch.shape}")
    scale = np.float32(spec.scale)
    mean, std = np.float32(spec.mean[0]), np.float32(spec.std[0])
    out = batch.astype(np.float32)[:, None]
    out *= scale / std
    out -= mean / std
    return out
