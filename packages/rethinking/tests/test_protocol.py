import torch
from torch import nn

from sparse_rethinking import (
    EpochSchedule,
    ProtocolConfig,
    SmallVGG,
    bn_l1_subgradient,
    magnitude_masks,
    prune_structured,
    reinitialize,
    run_seed,
    train_model,
)
from sparsecore.bench import make_model
from sparsecore.bench.train import evaluate
from sparsecore.evaluation import matched_random_masks


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallVGG(1, 10, (8, 8, 16, 16))


def _convs(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_l1_structured_pruning_is_predefined_and_exact(digits) -> None:
    model = _model()
    pruned, _ = prune_structured(model, digits.input_shape, 0.5, "l1", "layer")
    assert _convs(model) == [8, 8, 16, 16]
    assert _convs(pruned) == [4, 4, 8, 8]  # every layer keeps half its filters
    # the kept filters are those of largest L1 norm, copied with their weights
    first = model.features[0].weight
    kept = first.abs().sum((1, 2, 3)).topk(4).indices.sort().values
    assert torch.equal(pruned.features[0].weight, first[kept])
    bn = pruned.features[1]
    assert bn.num_features == 4 and pruned.classifier.in_features == 8


def test_matched_random_channels_have_the_same_widths(digits) -> None:
    model = _model()
    _, keeps = prune_structured(model, digits.input_shape, 0.6, "bn", "global")
    random_keeps = matched_random_masks(keeps, torch.Generator().manual_seed(5))
    assert {n: int(k.sum()) for n, k in keeps.items()} == {
        n: int(k.sum()) for n, k in random_keeps.items()
    }
    assert any(not torch.equal(keeps[n], random_keeps[n]) for n in keeps)
    rand, used = prune_structured(model, digits.input_shape, 0.0, keeps=random_keeps)
    assert all(torch.equal(used[n], random_keeps[n]) for n in keeps)
    pruned, _ = prune_structured(model, digits.input_shape, 0.6, "bn", "global")
    assert _convs(rand) == _convs(pruned)


def test_slimming_keeps_largest_gammas_globally(digits) -> None:
    model = _model()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.01, 1.0)
        model.features[1].weight[:] = 5.0  # the first layer's gammas dominate
    pruned, _ = prune_structured(model, digits.input_shape, 0.5, "bn", "global")
    widths = _convs(pruned)
    assert widths[0] == 8 and sum(widths) == 24  # global count, first layer kept whole


def test_scratch_shares_architecture_not_weights(digits) -> None:
    pruned, _ = prune_structured(_model(), digits.input_shape, 0.5, "l1", "layer")
    scratch = reinitialize(pruned, seed=123)
    a, b = dict(pruned.named_parameters()), dict(scratch.named_parameters())
    assert a.keys() == b.keys()
    assert all(a[n].shape == b[n].shape for n in a)
    convs = [n for n in a if n.endswith("weight") and a[n].dim() == 4]
    assert all(not torch.equal(a[n], b[n]) for n in [*convs, "classifier.weight"])
    assert all(x.data_ptr() != y.data_ptr() for x, y in zip(a.values(), b.values(), strict=True))
    again = reinitialize(pruned, seed=123)
    assert all(torch.equal(b[n], p) for n, p in again.named_parameters())


def test_weight_level_scratch_keeps_mask_exactly_zero(digits) -> None:
    model = _model()
    masks = magnitude_masks(model, 0.6)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == int(0.4 * total)
    assert "classifier.weight" not in masks  # official: conv weights only
    scratch = reinitialize(model, seed=7)
    train_model(scratch, digits, EpochSchedule.cifar(2), seed=1, masks=masks)
    params = dict(scratch.named_parameters())
    for name, mask in masks.items():
        assert torch.count_nonzero(params[name][~mask]) == 0
        assert torch.count_nonzero(params[name][mask]) == int(mask.sum())  # trained, alive


def test_slimming_subgradient_is_s_sign_gamma(digits) -> None:
    model = _model()
    with torch.no_grad():
        model.features[1].weight[:3] *= -1.0  # both signs present
    model(digits.x_train[:16]).logsumexp(1).sum().backward()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.weight.grad.clone() for m in norms]
    conv_before = model.features[0].weight.grad.clone()
    bn_l1_subgradient(model, 0.25)
    for m, grad in zip(norms, before, strict=True):
        assert torch.allclose(m.weight.grad - grad, 0.25 * torch.sign(m.weight.detach()))
    assert torch.equal(model.features[0].weight.grad, conv_before)  # only BN scales


def test_slimming_penalty_shrinks_gammas_in_training(digits) -> None:
    def gammas(strength: float) -> float:
        model = _model()
        train_model(model, digits, EpochSchedule.cifar(2), seed=1, slimming=strength)
        return sum(
            float(m.weight.abs().sum()) for m in model.modules() if isinstance(m, nn.BatchNorm2d)
        )

    assert gammas(5e-2) < gammas(0.0) - 0.5


def test_run_seed_end_to_end(digits) -> None:
    cfg = ProtocolConfig(epochs=2, widths=(8, 8, 16, 16), finetune_epochs=1)
    out = run_seed(digits, cfg, seed=0)
    for method in ("l1", "slimming", "weight"):
        for stage in ("pruned", "fine-tuned", "random-fine-tuned", "scratch-E", "scratch-B"):
            row = out[f"{method}/{stage}"]
            assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 < row["flops_ratio"] < 1.0
        assert out[f"{method}/scratch-E"]["epochs"] == 2
        if method != "weight":  # channel widths per group, exactly the configured fraction
            kept = out[f"{method}/pruned"]["kept"]
            assert sum(kept.values()) == (8 + 8 + 16 + 16) // 2
        expected = int(2 / out[f"{method}/pruned"]["flops_ratio"] + 1e-6)
        assert abs(out[f"{method}/scratch-B"]["epochs"] - expected) <= 1
    assert 0.0 <= evaluate(_model(), digits.x_test, digits.y_test) <= 1.0


def test_structured_pruning_handles_residual_groups(digits) -> None:
    model = make_model("resnet", digits, seed=0, width=8)
    pruned, keeps = prune_structured(model, digits.input_shape, 0.5, "l1", "layer")
    assert all(int(k.sum()) == k.numel() // 2 for k in keeps.values())
    x = digits.x_test[:4]
    assert pruned(x).shape == (4, 10)
    dense_params = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in pruned.parameters()) < 0.5 * dense_params
