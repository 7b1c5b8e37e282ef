import pytest
import torch
from torch import nn

from sparse_rethinking import NetworkSlimming, SmallVGG
from sparsecore.export import remove_channels
from sparsecore.select import keep_count
from sparsecore.testing import MethodConformance

SHAPE = (1, 8, 8)


def _vgg(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = SmallVGG(1, 4, widths=(8, 8, 16, 16))
    with torch.no_grad():  # trained-like, distinct |gamma| (no ties)
        for i, m in enumerate(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            m.weight.copy_(torch.linspace(0.05, 1.0, m.num_features).roll(i) + 0.003 * i)
            m.bias.uniform_(-0.2, 0.2)
    return model


class TestSlimmingConformance(MethodConformance):
    method_cls = NetworkSlimming
    sparsity = 0.5
    #: masks cover producer rows, biases and BN entries, so the mask-entry sparsity is not the
    #: channel fraction; exact channel counts are checked in the tests below
    check_sparsity_after_training = False

    def make_model(self, seed: int = 0) -> nn.Module:
        return _vgg(seed)

    def input_shape(self) -> tuple[int, ...]:
        return SHAPE

    def make_method(self, **overrides):
        kw = {"sparsity": self.sparsity, "input_shape": SHAPE, "prune_step": 12}
        return NetworkSlimming(**{**kw, **overrides})


def _gammas(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_penalty_is_l1_on_gammas_and_its_gradient_is_s_sign_gamma():
    model = _vgg()
    method = NetworkSlimming(sparsity=0.5, input_shape=SHAPE, strength=1e-3).setup(model)
    gammas = _gammas(model)
    reg = method.regularization()
    assert reg.item() == pytest.approx(1e-3 * sum(g.abs().sum().item() for g in gammas))
    reg.backward()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.allclose(m.weight.grad, 1e-3 * m.weight.sign())  # official updateBN
    assert all(p.grad is None for n, p in model.named_parameters() if "classifier" in n)


def test_global_prune_removes_exactly_the_lowest_gamma_channels_and_shrinks_exactly():
    model = _vgg()
    method = NetworkSlimming(sparsity=0.5, input_shape=SHAPE).setup(model)
    assert all(m.all() for m in method.masks.masks().values())  # dense until the prune
    all_gammas = torch.cat([g.abs() for g in _gammas(model)])
    keep = keep_count(all_gammas.numel(), 0.5)
    threshold = all_gammas.sort(descending=True).values[keep - 1]
    keeps = method.prune()
    assert sum(int(k.sum()) for k in keeps.values()) == keep
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:  # a kept channel has |gamma| >= the global threshold, a pruned one below
        kept = bn.weight.detach() != 0
        assert torch.all(bn.weight.detach().abs()[kept] >= threshold)
        assert torch.all(bn.bias.detach()[~kept] == 0)  # the BN shift goes with it
    x = torch.randn(4, *SHAPE)
    small = method.finalize().eval()
    masked = small(x)
    remove_channels(small, x[:1], {})
    assert torch.allclose(small(x), masked, atol=1e-5)
    assert sum(bn.num_features for bn in bns) == keep


def test_penalty_stops_and_masks_fix_after_prune_step():
    model = _vgg()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    method = NetworkSlimming(sparsity=0.5, input_shape=SHAPE, prune_step=3).setup(model, opt)
    for step in range(6):
        x, y = torch.randn(8, *SHAPE), torch.randint(0, 4, (8,))
        loss = nn.functional.cross_entropy(model(x), y) + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 1:
            assert not method.schedule_complete
        if step == 2:
            after = {n: m.clone() for n, m in method.masks.masks().items()}
    assert method.schedule_complete and method.regularization().item() == 0.0
    assert all(torch.equal(after[n], m) for n, m in method.masks.masks().items())
    assert any(not m.all() for m in after.values())


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="input_shape"):
        NetworkSlimming(sparsity=0.5)
    with pytest.raises(ValueError, match="pattern"):
        NetworkSlimming(sparsity=0.5, input_shape=SHAPE, pattern="unstructured")
    with pytest.raises(ValueError, match="strength"):
        NetworkSlimming(sparsity=0.5, input_shape=SHAPE, strength=-1.0)
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="BatchNorm"):
        NetworkSlimming(sparsity=0.5, input_shape=(4,)).setup(mlp)
