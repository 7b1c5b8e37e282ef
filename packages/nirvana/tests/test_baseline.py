"""The NeRV-style baseline and the synthetic videos."""

from __future__ import annotations

import pytest
import torch

from sparse_nirvana import NeRVConfig, encode_nerv, synthetic_video


def test_nerv_points_measured_from_bytes():
    video = synthetic_video("slow", frames=4, size=16, seed=1, shapes=2)
    result = encode_nerv(video, NeRVConfig(width=8, channels=4, iters=30, bits=(3, 6)))
    low, high = result.points
    assert low["bpp"] < high["bpp"]
    assert high["psnr"] > low["psnr"]
    assert high["psnr"] <= result.float_psnr + 0.5
    assert low["bytes"] * 8 >= low["estimate_bits"] * 0.97


@pytest.mark.parametrize(("field", "value"), [("bits", (1,)), ("channels", 3), ("iters", 0)])
def test_bad_nerv_options_name_the_field(field, value):
    with pytest.raises((TypeError, ValueError), match=field):
        NeRVConfig(**{field: value})


def test_videos_move_at_their_speed():
    still = synthetic_video("static", frames=3, size=16)
    assert torch.equal(still[0], still[2])
    slow = synthetic_video("slow", frames=3, size=16)
    fast = synthetic_video("fast", frames=3, size=16)
    d_slow = (slow[1:] - slow[:-1]).abs().mean()
    d_fast = (fast[1:] - fast[:-1]).abs().mean()
    assert 0 < d_slow < d_fast
    assert float(fast.min()) >= 0 and float(fast.max()) <= 1
    with pytest.raises(ValueError, match="kind"):
        synthetic_video("wobbly")
