"""Sliding-window inference with Gaussian blending, in K + 1 volumes of memory.

MONAI's ``sliding_window_inference`` keeps a full-volume map of summed window weights beside
the output. Here the Gaussian weight of a window is a product of 1D profiles and the windows
sit on a Cartesian grid, so the summed weight map is the outer product of three 1D sums and is
never materialised: the blended output is divided by it axis by axis, in place. Peak memory is
the output (K volumes) plus the input, which keeps a 3D CT within (K + 2) float32 volumes.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from medsight.inference.preprocess import MappedVolume

__all__ = ["sliding_window", "sliding_window_rows"]

#: sigma of the Gaussian profile, as a fraction of the window size (nnU-Net and MONAI: 1/8)
SIGMA_SCALE = 0.125
#: floor of each 1D profile, so every voxel keeps a positive weight
PROFILE_FLOOR = 1e-2


def _starts(size: int, window: int, overlap: float) -> list[int]:
    if size <= window:
        return [0]
    step = max(1, round(window * (1.0 - overlap)))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def _profile(window: int) -> np.ndarray:
    centre = (window - 1) / 2.0
    sigma = max(window * SIGMA_SCALE, 1e-3)
    profile = np.exp(-((np.arange(window) - centre) ** 2) / (2 * sigma**2))
    return np.maximum(profile / profile.max(), PROFILE_FLOOR).astype(np.float32)


@dataclass
class _Plan:
    """Where the windows go and how their Gaussian weights add up."""

    spatial: tuple[int, ...]  # the input's size
    padded: tuple[int, ...]  # zero-padded to at least one window per axis
    roi: list[int]
    corners: list[tuple[int, ...]]  # in itertools.product order: the first axis outermost
    weight: np.ndarray  # one window's weight (outer product of the 1D profiles)
    sums: list[np.ndarray]  # per axis, the summed 1D profiles


def _plan(
    values: Any, roi_size: Sequence[int], overlap: float, outer: int = 0
) -> tuple[Any, _Plan]:
    """The windows of ``values``, ordered with spatial axis ``outer`` outermost."""
    spatial = tuple(int(s) for s in values.shape[1:])
    roi = [int(r) for r in roi_size]
    padding = [max(0, r - s) for r, s in zip(roi, spatial, strict=True)]
    if any(padding):
        if isinstance(values, MappedVolume):  # small enough to be padded whole
            values = values[(slice(None),) * len(values.shape)]
        values = np.pad(values, [(0, 0)] + [(0, p) for p in padding])
    padded = tuple(int(s) for s in values.shape[1:])
    starts = [_starts(s, r, overlap) for s, r in zip(padded, roi, strict=True)]
    profiles = [_profile(r) for r in roi]
    weight = profiles[0]
    for profile in profiles[1:]:
        weight = np.multiply.outer(weight, profile)
    sums = []
    for size, length, axis_starts, profile in zip(padded, roi, starts, profiles, strict=True):
        total = np.zeros(size, dtype=np.float32)
        for start in axis_starts:
            total[start : start + length] += profile
        sums.append(total)
    order = [outer, *(a for a in range(len(starts)) if a != outer)]
    corners = [
        tuple(corner[order.index(a)] for a in range(len(starts)))
        for corner in itertools.product(*(starts[a] for a in order))
    ]
    return values, _Plan(spatial, padded, roi, corners, weight, sums)


@contextlib.contextmanager
def _blending_threads(streams: int) -> Iterator[None]:
    """While ``streams`` network runs occupy the cores, blend on one torch thread: torch's
    pool on every core would contend with them for the same cores."""
    import torch

    if streams <= 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _results(
    values: Any,
    plan: _Plan,
    predictor: Callable[[Any], Any],
    batch_size: int,
    streams: int,
) -> Iterator[tuple[list[tuple[slice, ...]], Any]]:
    """Each batch of windows with the network's output, in window order."""
    import torch

    def batch(windows: list[tuple[slice, ...]]) -> Any:
        return torch.from_numpy(np.stack([values[w] for w in windows]))

    group_size = max(1, batch_size // max(1, streams))
    groups = [
        [
            (slice(None), *(slice(c, c + r) for c, r in zip(corner, plan.roi, strict=True)))
            for corner in plan.corners[first : first + group_size]
        ]
        for first in range(0, len(plan.corners), group_size)
    ]
    if streams <= 1:
        for windows in groups:
            yield windows, predictor(batch(windows))
        return
    in_flight: deque[tuple[list[tuple[slice, ...]], Future[Any]]] = deque()
    with ThreadPoolExecutor(streams, thread_name_prefix="medsight-window") as pool:
        for windows in groups:
            if len(in_flight) == streams:
                done_windows, future = in_flight.popleft()
                yield done_windows, future.result()
            # the batch is cut here, not in the pool's threads: each thread would keep
            # its own malloc arena of freed windows (measured: +0.7 volumes of memory)
            in_flight.append((windows, pool.submit(predictor, batch(windows))))
        while in_flight:
            done_windows, future = in_flight.popleft()
            yield done_windows, future.result()


def sliding_window(
    values: np.ndarray | MappedVolume,
    roi_size: Sequence[int],
    predictor: Callable[[Any], Any],
    *,
    overlap: float = 0.5,
    batch_size: int = 4,
    streams: int = 1,
) -> np.ndarray:
    """Blended network output (k, *spatial) for input ``values`` (c, *spatial), float32.

    ``predictor`` maps a torch tensor (b, c, *roi) to (b, k, *roi). ``values`` may be a
    :class:`MappedVolume`, whose windows are preprocessed as they are cut out. Axes shorter
    than the window are zero-padded at their end for the network and cropped afterwards. With
    ``streams`` > 1 the ``batch_size`` windows are split into that many smaller batches that
    ``predictor`` runs at once from as many threads (so the windows in flight, and the memory
    they take, stay the same); outputs are blended in window order, so the result does not
    depend on which run ends first.
    """
    import torch

    values, plan = _plan(values, roi_size, overlap)
    # the blending runs in torch: in-place and fused (addcmul)
    weight_t = torch.from_numpy(plan.weight)
    output: np.ndarray | None = None
    output_t: Any = None
    with _blending_threads(streams):
        for windows, result in _results(values, plan, predictor, batch_size, streams):
            result = torch.as_tensor(result).detach().float()
            if output is None:
                output = np.zeros((result.shape[1], *plan.padded), dtype=np.float32)
                output_t = torch.from_numpy(output)
            for window, patch in zip(windows, result, strict=True):
                output_t[window].addcmul_(patch, weight_t)
    assert output is not None
    for axis, total in enumerate(plan.sums):
        shape = [1] * (len(plan.padded) + 1)
        shape[axis + 1] = len(total)
        output_t.div_(torch.from_numpy(total.reshape(shape)))
    return output[(slice(None), *(slice(0, int(s)) for s in plan.spatial))]


def sliding_window_rows(
    values: np.ndarray | MappedVolume,
    roi_size: Sequence[int],
    predictor: Callable[[Any], Any],
    on_rows: Callable[[int, int, np.ndarray], None],
    *,
    axis: int = 0,
    overlap: float = 0.5,
    batch_size: int = 4,
    streams: int = 1,
) -> None:
    """The blended output of :func:`sliding_window` handed out band by band along spatial
    ``axis``: ``on_rows(first, stop, block)`` with ``block`` (k, *spatial) but only rows
    ``first:stop`` along ``axis``, float32 (a view ``on_rows`` may overwrite), as soon as no
    later window touches those rows. Only one window's height along ``axis`` is held, never
    the whole (k, *spatial) output: choose the longest axis, so that band is the smallest
    share of the volume. The values equal :func:`sliding_window`'s."""
    import torch

    values, plan = _plan(values, roi_size, overlap, outer=axis)
    weight_t = torch.from_numpy(plan.weight)
    height = plan.roi[axis]
    dims = len(plan.padded)
    band: np.ndarray | None = None
    band_t: Any = None
    base = 0  # the padded row the band's first row is

    def along(rows: slice) -> tuple[slice, ...]:
        return (slice(None), *(rows if a == axis else slice(None) for a in range(dims)))

    crop = tuple(slice(None) if a == axis else slice(0, int(s)) for a, s in enumerate(plan.spatial))
    divisors = []
    for position, total in enumerate(plan.sums):
        shape = [1] * (dims + 1)
        shape[position + 1] = len(total)
        divisors.append(torch.from_numpy(total).reshape(shape))

    def emit(stop: int) -> None:
        nonlocal base
        assert band is not None
        rows = stop - base
        if rows <= 0:
            return
        block = band_t[along(slice(0, rows))]  # finished: divided and handed out in place
        for position, divisor in enumerate(divisors):
            block.div_(divisor[along(slice(base, stop))] if position == axis else divisor)
        kept = min(stop, plan.spatial[axis]) - base
        if kept > 0:
            on_rows(base, base + kept, band[along(slice(0, kept))][(slice(None), *crop)])
        # the rows still open move to the band's front, row by row (no band-sized copy)
        for row in range(height - rows):
            band_t[along(slice(row, row + 1))] = band_t[along(slice(row + rows, row + rows + 1))]
        band_t[along(slice(height - rows, height))] = 0
        base = stop

    with _blending_threads(streams):
        for windows, result in _results(values, plan, predictor, batch_size, streams):
            result = torch.as_tensor(result).detach().float()
            if band is None:
                shape = [height if a == axis else s for a, s in enumerate(plan.padded)]
                band = np.zeros((result.shape[1], *shape), dtype=np.float32)
                band_t = torch.from_numpy(band)
            for window, patch in zip(windows, result, strict=True):
                start = window[axis + 1].start
                emit(start)  # every window before this one starts at or before ``start``
                local = list(window)
                local[axis + 1] = slice(start - base, start - base + plan.roi[axis])
                band_t[tuple(local)].addcmul_(patch, weight_t)
    emit(plan.padded[axis])
