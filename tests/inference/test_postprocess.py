"""Segment post-processing: largest component and the cavity its wall encloses."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.datasets import repository_root
from medsight.inference.predictor import _postprocess
from medsight.tasks import load_task

pytestmark = pytest.mark.timeout(60)


def test_the_ring_encloses_its_cavity_slice_by_slice_and_strays_go():
    spec = load_task(repository_root() / "recipes" / "templates" / "cardiac-mr").spec
    labels = np.zeros((40, 40, 3), np.uint8)
    yy, xx = np.mgrid[:40, :40]
    radius = np.hypot(yy - 20, xx - 20)
    for k in range(3):
        labels[..., k][(radius >= 7) & (radius < 10)] = 2  # myocardium ring
        labels[..., k][radius < 7] = 3  # LV cavity
    labels[18:21, 18:21, 1] = 2  # a papillary muscle labelled myocardium, inside the cavity
    labels[20, 19, 2] = 0  # a gap in the cavity
    labels[2:5, 2:5, 0] = 3  # a stray LV island far from the heart
    labels[30:36, 30:36, :] = 1  # the right ventricle, untouched
    result = _postprocess(labels, spec)
    assert (result[2:5, 2:5, 0] == 0).all()  # not the largest LV component
    assert (result[radius < 7] == 3).all()  # muscle and gap are cavity now, in every slice
    assert ((result == 2) == ((radius >= 7) & (radius < 10))[..., None]).all()
    assert (result[30:36, 30:36, :] == 1).all()


def test_no_cavity_is_invented_where_none_was_found():
    spec = load_task(repository_root() / "recipes" / "templates" / "cardiac-mr").spec
    labels = np.zeros((30, 30, 1), np.uint8)
    yy, xx = np.mgrid[:30, :30]
    labels[..., 0][(np.hypot(yy - 15, xx - 15) >= 5) & (np.hypot(yy - 15, xx - 15) < 8)] = 2
    assert not (_postprocess(labels, spec) == 3).any()
