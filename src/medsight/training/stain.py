"""H&E stain augmentation: each patch's haematoxylin, eosin and residual (DAB) optical
densities scaled and shifted at random (Tellez et al., Medical Image Analysis 2019, "HED
jitter"), so that a nucleus model sees the spread of staining between laboratories.

The colour deconvolution is scikit-image's (``rgb2hed``/``hed2rgb``, Ruifrok and Johnston's
stain vectors); MONAI has no stain transform, and this one is a few lines around it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["RandHEDJitterd"]


def _jitter_class() -> Any:
    from monai.transforms import MapTransform, RandomizableTransform

    class _RandHEDJitterd(RandomizableTransform, MapTransform):
        """Dictionary transform on a channel-first RGB patch with values in [0, 1]."""

        def __init__(self, key: str, sigma: float = 0.05, prob: float = 0.8) -> None:
            RandomizableTransform.__init__(self, prob)
            MapTransform.__init__(self, [key])
            self.sigma = sigma
            self._scale = np.ones(3)
            self._shift = np.zeros(3)

        def randomize(self, data: Any = None) -> None:
            super().randomize(None)
            self._scale = self.R.uniform(1 - self.sigma, 1 + self.sigma, 3)
            self._shift = self.R.uniform(-self.sigma, self.sigma, 3)

        def __call__(self, data: Any) -> Any:
            from skimage.color import hed2rgb, rgb2hed

            self.randomize()
            if not self._do_transform:
                return data
            result = dict(data)
            for key in self.keys:
                values = np.asarray(result[key], dtype=np.float32)
                rgb = np.clip(np.moveaxis(values, 0, -1), 0.0, 1.0)
                # the stain densities are in optical-density units of about 0-0.3: the shift
                # is relative to each channel's range in the patch
                hed = rgb2hed(rgb)
                spread = np.maximum(hed.reshape(-1, 3).max(0) - hed.reshape(-1, 3).min(0), 1e-3)
                hed = hed * self._scale + self._shift * spread
                result[key] = np.moveaxis(np.clip(hed2rgb(hed), 0.0, 1.0), -1, 0).astype(np.float32)
            return result

    return _RandHEDJitterd


def RandHEDJitterd(key: str = "image", sigma: float = 0.05, prob: float = 0.8) -> Any:  # noqa: N802
    """A MONAI dictionary transform (built on first use: MONAI is a heavy import)."""
    return _jitter_class()(key, sigma=sigma, prob=prob)
