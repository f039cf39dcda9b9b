"""Batched augmentation: seeded (a resumed run sees the same batches), and the fundus
setting turns images through any angle and changes each colour channel's gain."""

from __future__ import annotations

import torch

from medsight.training.augment import augment_batch


def test_the_same_seed_gives_the_same_batch():
    batch = torch.rand(4, 3, 32, 32)
    for strength in ("standard", "strong", "fundus"):
        assert torch.equal(augment_batch(batch, 7, strength), augment_batch(batch, 7, strength))


def test_fundus_augmentation_turns_any_way_and_rebalances_colour():
    # a left-right ramp, grey: a half turn (or a mirror) flips its slope, gains split the
    # channels (the standard setting never does: it keeps them equal)
    ramp = torch.linspace(0.2, 0.8, 64).repeat(64, 1)
    batch = ramp.expand(32, 3, 64, 64).clone()
    moved = augment_batch(batch, 3, "fundus")
    centre = moved[:, :, 24:40, 24:40]
    slopes = (centre[:, 0, :, -1] - centre[:, 0, :, 0]).mean(dim=1)
    assert 0 < int((slopes < 0).sum()) < 32  # some turned round, not all
    channel_means = centre.mean(dim=(2, 3))
    spread = (channel_means.max(dim=1).values - channel_means.min(dim=1).values) / (
        channel_means.mean(dim=1)
    )
    assert float(spread.max()) > 0.02  # the channels no longer agree: a white-balance change
    assert torch.equal(
        augment_batch(batch, 3, "standard")[:, 0], augment_batch(batch, 3, "standard")[:, 1]
    )
