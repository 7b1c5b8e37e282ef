"""Volume rendering against closed forms; synthetic scene ground truth; PSNR."""

import math

import pytest
import torch
from torch import nn

from sparse_hollownerf import (
    Primitive,
    Scene,
    composite,
    make_views,
    psnr,
    random_scene,
    render_rays,
    stratified_samples,
)

torch.set_num_threads(1)


class Medium(nn.Module):
    """Density/colour as a function of the distance along +x from the plane x = 0."""

    def __init__(self, split: float, s1: float, s2: float, c1, c2) -> None:
        super().__init__()
        self.split, self.s1, self.s2 = split, s1, s2
        self.c1, self.c2 = torch.tensor(c1), torch.tensor(c2)

    def forward(self, x):
        first = x[:, 0] < self.split
        sigma = torch.where(first, self.s1, self.s2)
        rgb = torch.where(first[:, None], self.c1, self.c2)
        return sigma, rgb


def _rays(n):
    origins = torch.zeros(n, 3)
    dirs = torch.zeros(n, 3)
    dirs[:, 0] = 1.0
    return origins, dirs


@pytest.mark.parametrize("jitter", [False, True])
def test_constant_medium_matches_closed_form(jitter):
    sigma, c, bg, near, far = 2.5, (0.2, 0.5, 0.9), 0.7, 0.3, 1.9
    field = Medium(100.0, sigma, sigma, c, c)
    gen = torch.Generator().manual_seed(0) if jitter else None
    out = render_rays(field, *_rays(5), near, far, 17, gen, background=bg)
    d = far - near
    t_end = math.exp(-sigma * d)
    assert torch.allclose(out.transmittance, torch.full((5,), t_end), atol=1e-6)
    want = torch.tensor(c) * (1 - t_end) + bg * t_end
    assert torch.allclose(out.color, want.expand(5, 3), atol=1e-5)
    assert torch.allclose(out.weights.sum(1), torch.full((5,), 1 - t_end), atol=1e-6)


def test_two_layer_medium_compositing():
    near, far, n = 0.0, 2.0, 20
    s1, s2, c1, c2, bg = 1.5, 4.0, (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), 1.0
    field = Medium(1.0, s1, s2, c1, c2)
    out = render_rays(field, *_rays(3), near, far, n, None, background=bg)
    a1, a2 = 1 - math.exp(-s1), 1 - math.exp(-s2)
    want = torch.tensor(c1) * a1 + (1 - a1) * torch.tensor(c2) * a2 + (1 - a1) * (1 - a2) * bg
    assert torch.allclose(out.color, want.expand(3, 3), atol=1e-5)


def test_composite_weights_formula():
    sigma = torch.tensor([[0.0, 1.0, 3.0]])
    rgb = torch.rand(1, 3, 3, generator=torch.Generator().manual_seed(0))
    out = composite(sigma, rgb, 0.5, background=0.0)
    t, ws = 1.0, []
    for s in sigma[0].tolist():
        a = 1 - math.exp(-s * 0.5)
        ws.append(t * a)
        t *= 1 - a
    assert torch.allclose(out.weights[0], torch.tensor(ws), atol=1e-6)
    assert float(out.transmittance[0]) == pytest.approx(t, abs=1e-6)


def test_stratified_samples_stay_in_their_bins():
    gen = torch.Generator().manual_seed(1)
    t, delta = stratified_samples(100, 0.5, 2.5, 8, gen)
    assert delta == pytest.approx(0.25)
    lo = 0.5 + 0.25 * torch.arange(8)
    assert ((t >= lo) & (t <= lo + 0.25)).all()
    mid, _ = stratified_samples(2, 0.5, 2.5, 8)
    assert torch.allclose(mid[0], lo + 0.125)


def test_scene_sphere_closed_form():
    sph = Primitive("sphere", (0.5, 0.5, 0.5), 0.2, 3.0, (0.1, 0.6, 0.3))
    scene = Scene((sph,), background=1.0)
    o = torch.tensor([[-1.0, 0.5, 0.5], [-1.0, 0.9, 0.9]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    got = scene.render(o, d)
    t = math.exp(-3.0 * 0.4)
    assert torch.allclose(got[0], torch.tensor(sph.color) * (1 - t) + t, atol=1e-6)
    assert torch.allclose(got[1], torch.ones(3))


def test_scene_render_matches_fine_quadrature():
    scene = random_scene(3, n_primitives=3)

    class Analytic(nn.Module):
        def forward(self, x):
            sigma = torch.zeros(x.shape[0])
            rgb = torch.zeros(x.shape[0], 3)
            for p in scene.primitives:
                c = torch.tensor(p.center)
                if p.kind == "sphere":
                    inside = ((x - c) ** 2).sum(-1) <= p.size**2
                else:
                    inside = ((x - c).abs() <= p.size).all(-1)
                sigma = torch.where(inside, p.density, sigma)
                rgb = torch.where(inside[:, None], torch.tensor(p.color), rgb)
            return sigma, rgb

    views = make_views(scene, 2, image_size=8)
    o, d = views.origins[0], views.dirs[0]
    fine = render_rays(Analytic(), o, d, views.near, views.far, 3000, None, scene.background)
    assert (views.colors[0] != 1).any()
    assert torch.allclose(fine.color, views.colors[0], atol=2e-2)


def test_random_scene_primitives_are_disjoint_and_inside():
    scene = random_scene(5, n_primitives=4)
    prims = scene.primitives
    assert len(prims) == 4
    for i, p in enumerate(prims):
        r = p.bounding_radius()
        assert all(c - r >= 0 and c + r <= 1 for c in p.center)
        for q in prims[i + 1 :]:
            assert math.dist(p.center, q.center) > r + q.bounding_radius()


def test_views_geometry():
    scene = random_scene(0)
    views = make_views(scene, 3, image_size=6, radius=1.5)
    assert views.origins.shape == views.colors.shape == (3, 36, 3)
    assert torch.allclose(views.dirs.norm(dim=-1), torch.ones(3, 36), atol=1e-6)
    assert views.near == pytest.approx(1.5 - math.sqrt(3) / 2)
    assert ((views.colors >= 0) & (views.colors <= 1)).all()


def test_psnr_formula():
    a = torch.zeros(10)
    b = torch.full((10,), 0.1)
    assert psnr(a, b) == pytest.approx(20.0)
    assert psnr(a, a) == math.inf


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="far"):
        stratified_samples(2, 1.0, 1.0, 4)
    with pytest.raises(ValueError, match="n_samples"):
        stratified_samples(2, 0.0, 1.0, 0)
    with pytest.raises(ValueError, match="delta"):
        composite(torch.zeros(1, 2), torch.zeros(1, 2, 3), 0.0)
    with pytest.raises(ValueError, match="rgb"):
        composite(torch.zeros(1, 2), torch.zeros(1, 3, 3), 0.1)
    with pytest.raises(ValueError, match="kind"):
        Primitive("cone", (0.5, 0.5, 0.5), 0.1, 1.0, (1, 1, 1))
    with pytest.raises(ValueError, match="n_views"):
        make_views(random_scene(0), 0)
    with pytest.raises(ValueError, match="radius"):
        make_views(random_scene(0), 2, radius=0.5)
    with pytest.raises(ValueError, match="shapes"):
        psnr(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="origins"):
        render_rays(nn.Identity(), torch.zeros(2, 3), torch.zeros(3, 3), 0.0, 1.0, 4)
