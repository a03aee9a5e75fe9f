"""nnU-Net's default CT resampling (cubic B-spline, edge mode), computed one axis at a time.

nnU-Net's ``resample_data_or_seg_to_shape`` hands the whole volume to skimage's ``resize`` (order 3, edge
mode, no anti-aliasing), which pads every axis by 12 voxels, prefilters the padded volume along all three
axes and then interpolates all three at once: on a real-size CT this is most of the preprocessing. A
tensor-product spline is separable: prefiltering and interpolating along one axis commute with the same
along another, so the same values come out of three one-axis passes, each on the already shrunk result of
the one before (the most shrinking axis first). Floating-point summation order is all that differs.

Only the case the bundled plans name is done here (data, order 3, no separate z axis); every other case goes
to nnU-Net's own function.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

# scipy's zoom pre-pads this many edge voxels for the 'nearest' mode before prefiltering.
SPLINE_PAD = 12
# Values per slab (float64): a few MB, which the allocator keeps and reuses from one slab to the next.
SLAB_VALUES = 1 << 19


def _cubic_bspline_weights(fraction: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weights of the four coefficients at floor(x) - 1 .. floor(x) + 2 for x = floor(x) + fraction."""
    t = fraction
    return (
        (1.0 - t) ** 3 / 6.0,
        (3.0 * t**3 - 6.0 * t**2 + 4.0) / 6.0,
        (-3.0 * t**3 + 3.0 * t**2 + 3.0 * t + 1.0) / 6.0,
        t**3 / 6.0,
    )


def zoom_axis(data: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``data`` resampled (in float64) along ``axis`` to ``size`` samples as scipy's grid-mode cubic zoom does:
    sample ``m`` of the output lies at ``(m + 0.5) * n / size - 0.5`` of the input's ``n``.

    Lines along ``axis`` are independent, so the work goes in slabs across another axis: each slab's
    temporaries stay small enough for the allocator to reuse, where whole-volume ones would be fresh
    memory, page-faulted in again, on every pass."""
    n = data.shape[axis]
    if n == size:
        return data
    position = (np.arange(size) + 0.5) * (n / size) - 0.5 + SPLINE_PAD
    base = np.floor(position)
    first = base.astype(int) - 1
    shape = [1] * data.ndim
    shape[axis] = size
    weights = [weight.reshape(shape) for weight in _cubic_bspline_weights(position - base)]
    result = np.empty(tuple(size if a == axis else length for a, length in enumerate(data.shape)))
    across = next(a for a in range(data.ndim) if a != axis)
    lines_per_slab = max(1, SLAB_VALUES // (data.size // data.shape[across]))
    pad = [(SPLINE_PAD, SPLINE_PAD) if a == axis else (0, 0) for a in range(data.ndim)]
    for start in range(0, data.shape[across], lines_per_slab):
        part = [slice(None)] * data.ndim
        part[across] = slice(start, start + lines_per_slab)
        coefficients = ndimage.spline_filter1d(np.pad(data[tuple(part)], pad, mode="edge"), 3, axis=axis,
                                               output=np.float64, mode="nearest")
        target = result[tuple(part)]
        target[...] = 0.0
        for tap, weight in enumerate(weights):
            target += weight * np.take(coefficients, first + tap, axis=axis)
    return result


def resize_cubic(volume: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """skimage's ``resize(volume, new_shape, order=3, mode="edge", anti_aliasing=False)``, one axis at a
    time (float64, clipped to the input's range as skimage clips)."""
    data = np.asarray(volume)  # each slab is prefiltered into float64, so no float64 copy of the whole volume
    low, high = float(data.min()), float(data.max())
    for axis in sorted(range(data.ndim), key=lambda a: new_shape[a] / data.shape[a]):
        data = zoom_axis(data, axis, int(new_shape[axis]))
    return np.clip(np.asarray(data, dtype=np.float64), low, high)


def resample_data_or_seg_to_shape(
    data,
    new_shape,
    current_spacing,
    new_spacing,
    is_seg: bool = False,
    order: int = 3,
    order_z: int = 0,
    force_separate_z: bool | None = False,
    separate_z_anisotropy_threshold: float | None = None,
):
    """nnU-Net's function of this name (same arguments, same result), separable where that is exact."""
    from nnunetv2.preprocessing.resampling import default_resampling

    threshold = separate_z_anisotropy_threshold or default_resampling.ANISO_THRESHOLD
    separate_z, _ = default_resampling.determine_do_sep_z_and_axis(
        force_separate_z, current_spacing, new_spacing, threshold
    )
    if is_seg or order != 3 or separate_z:
        return default_resampling.resample_data_or_seg_to_shape(
            data, new_shape, current_spacing, new_spacing, is_seg, order, order_z, force_separate_z, threshold
        )
    data = data.numpy() if hasattr(data, "numpy") else data
    if tuple(data.shape[1:]) == tuple(int(v) for v in new_shape):
        return data
    return np.stack([resize_cubic(channel, new_shape).astype(data.dtype) for channel in data])
