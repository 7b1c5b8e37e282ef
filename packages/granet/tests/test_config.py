"""Bad configurations raise clear errors naming the parameter, before the model is touched."""

import copy

import pytest
import torch

from sparse_granet import GraNet, GraNetConfig
from sparsecore.testing import tiny_mlp

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"sparsity": 0.5, "init_density": 0.5}, ValueError, "init_density"),
        ({"sparsity": 0.3, "init_density": 0.5}, ValueError, "init_density"),
        ({"init_density": 0.0}, ValueError, "init_density"),
        ({"init_density": 1.5}, ValueError, "init_density"),
        ({"init_density": "half"}, TypeError, "init_density"),
        ({"begin_step": 200, "end_step": 100}, ValueError, "end_step"),
        ({"begin_step": 100, "end_step": 150, "update_every": 100}, ValueError, "end_step"),
        ({"update_every": 0}, ValueError, "update_every"),
        ({"update_every": 2.5}, TypeError, "update_every"),
        ({"begin_step": -1}, ValueError, "begin_step"),
        ({"drop_fraction": 1.5}, ValueError, "drop_fraction"),
        ({"final_drop_fraction": -0.1}, ValueError, "final_drop_fraction"),
        ({"total_steps": 0}, ValueError, "total_steps"),
        ({"init_distribution": "gaussian"}, ValueError, "init_distribution"),
        ({"regenerate": 1}, TypeError, "regenerate"),
        ({"sparsity": 1.0}, ValueError, "sparsity"),
    ],
)
def test_bad_config_raises(options: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        GraNet(**options)


def test_unsupported_pattern_raises_before_touching_model() -> None:
    model = tiny_mlp()
    before = copy.deepcopy(model.state_dict())
    method = GraNet(sparsity=0.75, pattern="2:4", end_step=100)
    with pytest.raises(ValueError, match="patterns"):
        method.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_config_object_and_defaults() -> None:
    config = GraNetConfig(sparsity=0.9, end_step=500, update_every=50)
    method = GraNet(config)
    assert method.config is config
    # official defaults: p0 = 0.5, eta_min = 0.005, d_i = 0.5 with ERK
    assert (config.drop_fraction, config.final_drop_fraction) == (0.5, 0.005)
    assert (config.init_density, config.init_distribution) == (0.5, "erk")
    assert config.fraction_schedule.total == 1000  # default T = 2 * end_step
    with pytest.raises(TypeError, match="config"):
        GraNet(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("sparsity", [0.3, 0.5])
def test_bench_config_uses_the_dense_start_when_the_target_is_not_below_init_density(sparsity):
    from sparsecore.bench.train import build_method

    overrides = GraNet.bench_config(1000, sparsity)
    assert overrides == {"init_density": 1.0}
    with pytest.raises(ValueError, match="init_density"):
        GraNet(sparsity=sparsity)  # the default sparse start cannot reach this target
    method = build_method(GraNet, sparsity, seed=0, total_steps=1000).setup(tiny_mlp())
    assert method.config.init_density == 1.0 and method.config.end_step == 750
    assert method.masks.sparsity() == 0.0  # dense start: GraNet's dense-to-sparse variant
    assert GraNet.bench_config(1000, 0.9) == {} and GraNet.bench_config(1000, None) == {}
