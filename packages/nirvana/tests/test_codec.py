"""The codec: autoregressive init, residual sparsity vs motion, coded size, bit-exact decode."""

from __future__ import annotations

import pytest
import torch

from sparse_nirvana import CodecConfig, decode_video, encode_video, psnr

from ._helpers import tiny_config, tiny_video


@pytest.fixture(scope="module")
def slow():
    video = tiny_video("slow")
    return video, encode_video(video, tiny_config())


@pytest.fixture(scope="module")
def static():
    video = tiny_video("static")
    return video, encode_video(video, tiny_config(tolerance=0.0))


@pytest.fixture(scope="module")
def fast():
    video = tiny_video("fast")
    return video, encode_video(video, tiny_config(tolerance=0.0))


def test_group_starts_from_previous_groups_final_weights(slow):
    _, enc = slow
    assert len(enc.initial) == len(enc.final) == 4
    for g in range(1, 4):
        for key, ints in enc.initial[g].items():
            assert torch.equal(ints, enc.final[g - 1][key])


def test_without_autoregression_groups_restart():
    enc = encode_video(tiny_video("slow", frames=4), tiny_config(autoregressive=False))
    assert any(not torch.equal(v, enc.final[0][k]) for k, v in enc.initial[1].items())
    decoded = decode_video(enc.data)  # coded on its own, decoded on its own
    assert decoded.shape == (4, 3, 16, 16)


def test_decode_is_bit_exact_and_from_bytes_alone(slow):
    video, enc = slow
    a, b = decode_video(enc.data), decode_video(bytes(enc.data))
    assert a.shape == video.shape
    assert torch.equal(a, b)
    assert psnr(a, video) > psnr(torch.full_like(video, 0.5), video) + 3.0
    assert enc.bpp == pytest.approx(8 * len(enc.data) / (8 * 16 * 16))


def test_decoded_psnr_is_the_encoders_quantized_psnr(slow):
    video, enc = slow
    decoded = decode_video(enc.data)
    for g, quality in enumerate(enc.psnr_groups):
        assert psnr(decoded[2 * g : 2 * g + 2], video[2 * g : 2 * g + 2]) == pytest.approx(
            quality, abs=0.05
        )


def test_coded_size_matches_entropy_estimate(slow):
    _, enc = slow
    streams = 4  # at most 32 bits of padding per group's stream
    assert enc.coded_bits >= enc.estimate_bits * 0.97
    assert enc.coded_bits <= enc.estimate_bits * 1.03 + 32 * streams


def test_static_video_has_far_more_zero_residuals(fast, static):
    _, moving = fast
    _, still = static
    assert min(still.zeros) > 0.99
    assert sum(still.iterations[1:]) == 0  # adaptive: nothing left to fit
    assert sum(moving.zeros) / len(moving.zeros) < 0.9
    assert still.bpp < moving.bpp


def test_corrupt_stream_refused():
    with pytest.raises(ValueError, match="data"):
        decode_video(b"XXXX" + bytes(30))


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("group", 0, ValueError),
        ("patch", 7, ValueError),
        ("lam", -1.0, ValueError),
        ("lr", 0.0, ValueError),
        ("adaptive", "yes", TypeError),
        ("target_psnr", -3.0, ValueError),
        ("first_iters", 1.5, TypeError),
    ],
)
def test_bad_codec_options_name_the_field(field, value, error):
    with pytest.raises(error, match=field):
        CodecConfig(**{field: value})


def test_bad_video_refused():
    with pytest.raises(ValueError, match="video"):
        encode_video(torch.zeros(3, 3, 16, 16), tiny_config())  # 3 frames, groups of 2
    with pytest.raises(ValueError, match="video"):
        encode_video(torch.zeros(4, 16, 16), tiny_config())


def test_same_seed_same_bytes():
    video = tiny_video("fast", frames=4)
    config = tiny_config(first_iters=15, max_iters=5)
    assert encode_video(video, config).data == encode_video(video, config).data
