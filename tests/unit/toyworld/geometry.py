"""Measures on scene masks that the scene and training tests share."""

from __future__ import annotations

import numpy as np


def least_gap(masks: list[np.ndarray]) -> int:
    """Fewest background pixels (8-connected, so Chebyshev distance − 1) between two of the masks."""
    least = 10**6
    for k, mask in enumerate(masks):
        for other in masks[k + 1 :]:
            a, b = np.argwhere(mask), np.argwhere(other)
            least = min(least, int(np.abs(a[:, None, :] - b[None, :, :]).max(-1).min()) - 1)
    return least
