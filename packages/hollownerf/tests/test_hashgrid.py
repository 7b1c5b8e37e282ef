"""Hash encoding: indices, determinism, brute-force formula, interpolation, skipped lookups."""

import math

import pytest
import torch

from sparse_hollownerf import PRIMES, HashEncoding, spatial_hash

torch.set_num_threads(1)


def _brute_row(enc: HashEncoding, level: int, v: tuple[int, int, int]) -> int:
    res, size = enc.resolutions[level], enc.sizes[level]
    if res**3 > enc.table_size:
        h = 0
        for c, p in zip(v, PRIMES, strict=True):
            h ^= (c * p) & 0xFFFFFFFF
        return h % enc.table_size
    return (v[0] + v[1] * res + v[2] * res * res) % size


def test_primes_are_instant_ngp():
    assert PRIMES == (1, 2654435761, 805459861)


def test_spatial_hash_matches_python_uint32_formula():
    gen = torch.Generator().manual_seed(0)
    coords = torch.randint(0, 2**15, (500, 3), generator=gen)
    for size in (7, 512, 4096):
        got = spatial_hash(coords, size)
        want = [
            ((x * 1) & 0xFFFFFFFF ^ (y * 2654435761) & 0xFFFFFFFF ^ (z * 805459861) & 0xFFFFFFFF)
            % size
            for x, y, z in coords.tolist()
        ]
        assert got.tolist() == want
        assert int(got.min()) >= 0 and int(got.max()) < size


def test_level_geometry_follows_tcnn():
    enc = HashEncoding(levels=6, features=2, table_size=2048, base_resolution=4, max_resolution=40)
    b = math.exp((math.log(40) - math.log(4)) / 5)
    assert enc.growth == pytest.approx(b)
    for lv in range(6):
        scale = 4 * b**lv - 1
        res = math.ceil(scale) + 1
        assert enc.scales[lv] == pytest.approx(scale)
        assert enc.resolutions[lv] == res
        assert enc.sizes[lv] == min(-(-(res**3) // 8) * 8, 2048)
        assert enc.hashed[lv] == (res**3 > 2048)
    assert any(enc.hashed) and not all(enc.hashed)
    assert enc.table.shape == (sum(enc.sizes), 2)


def test_rows_in_range_deterministic_and_equal_brute_force():
    enc = HashEncoding(levels=6, table_size=512, base_resolution=3, max_resolution=50, seed=1)
    other = HashEncoding(levels=6, table_size=512, base_resolution=3, max_resolution=50, seed=2)
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(3))
    x[:5] = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 1], [0.5, 0.5, 0.5], [0, 1, 0]])
    rows, weights = enc.corners(x)
    rows2, _ = other.corners(x)
    assert torch.equal(rows, rows2) and torch.equal(rows, enc.corners(x)[0])
    assert torch.allclose(weights.sum(-1), torch.ones(300, 6))
    for lv in range(6):
        assert int(rows[:, lv].min()) >= 0 and int(rows[:, lv].max()) < enc.sizes[lv]
    for n in range(0, 300, 7):
        for lv in range(6):
            pos = [float(x[n, d]) * enc.scales[lv] + 0.5 for d in range(3)]
            base = [math.floor(p) for p in pos]
            for c in range(8):
                v = (base[0] + (c & 1), base[1] + ((c >> 1) & 1), base[2] + ((c >> 2) & 1))
                assert int(rows[n, lv, c]) == _brute_row(enc, lv, v)
                w = 1.0
                for d, bit in enumerate((c & 1, (c >> 1) & 1, (c >> 2) & 1)):
                    f = pos[d] - base[d]
                    w *= f if bit else 1 - f
                assert float(weights[n, lv, c]) == pytest.approx(w, abs=1e-5)


def test_trilinear_interpolation_reproduces_linear_function_on_dense_level():
    enc = HashEncoding(levels=2, features=2, table_size=4096, base_resolution=4, max_resolution=8)
    assert not enc.hashed[0]
    res = enc.resolutions[0]
    with torch.no_grad():
        enc.table.zero_()
        for i in range(res):
            for j in range(res):
                for k in range(res):
                    enc.table[i + j * res + k * res * res] = torch.tensor([float(i), float(k)])
    x = torch.rand(50, 3, generator=torch.Generator().manual_seed(0)) * 0.8
    out = enc(x)[:, :2]
    pos = x * enc.scales[0] + 0.5
    assert torch.allclose(out[:, 0], pos[:, 0], atol=1e-5)
    assert torch.allclose(out[:, 1], pos[:, 2], atol=1e-5)


def test_inactive_points_are_not_read_and_get_no_gradient():
    enc = HashEncoding(levels=5, table_size=256, base_resolution=4, max_resolution=40, seed=0)
    x = torch.rand(200, 3, generator=torch.Generator().manual_seed(1))
    active = torch.zeros(200, dtype=torch.bool)
    active[::3] = True
    rows, weights = enc.corners(x)
    flat = rows + enc.offsets[:-1][None, :, None]
    read_by_active = torch.zeros(enc.table.shape[0], dtype=torch.bool)
    read_by_active[flat[active][weights[active] > 0]] = True
    # Poison every row no active point reads: a multiplication by zero would give NaN.
    with torch.no_grad():
        enc.table[~read_by_active] = float("nan")
    out = enc(x, active)
    assert torch.isfinite(out).all()
    assert torch.equal(out[~active], torch.zeros_like(out[~active]))
    assert (out[active] != 0).any(-1).all()
    (out * torch.randn_like(out)).sum().backward()
    grad = enc.table.grad
    assert torch.equal(grad[~read_by_active], torch.zeros_like(grad[~read_by_active]))
    assert (grad[read_by_active] != 0).any()


def test_active_subset_equals_encoding_of_subset():
    enc = HashEncoding(levels=4, table_size=128, seed=0)
    x = torch.rand(40, 3, generator=torch.Generator().manual_seed(2))
    active = torch.rand(40, generator=torch.Generator().manual_seed(3)) > 0.5
    assert torch.equal(enc(x, active)[active], enc(x[active]))


@pytest.mark.parametrize(
    ("kwargs", "exc", "word"),
    [
        ({"levels": 0}, ValueError, "levels"),
        ({"features": 1.5}, TypeError, "features"),
        ({"table_size": 0}, ValueError, "table_size"),
        ({"base_resolution": 1}, ValueError, "base_resolution"),
        ({"base_resolution": 8, "max_resolution": 4}, ValueError, "max_resolution"),
        ({"init_scale": -1.0}, ValueError, "init_scale"),
    ],
)
def test_bad_construction_raises(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        HashEncoding(**kwargs)


def test_bad_inputs_raise():
    enc = HashEncoding(levels=2, table_size=64)
    with pytest.raises(ValueError, match="x must have shape"):
        enc(torch.rand(4, 2))
    with pytest.raises(TypeError, match="floating"):
        enc(torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="active"):
        enc(torch.rand(4, 3), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="coords"):
        spatial_hash(torch.rand(4, 3), 16)
    with pytest.raises(ValueError, match="size"):
        spatial_hash(torch.zeros(4, 3, dtype=torch.int64), 0)
