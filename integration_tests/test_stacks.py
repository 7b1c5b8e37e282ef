"""Methods stacked the way a researcher stacks them, each asserting the composed invariants.

Every stack is tiny (a 16-32-32-4 MLP or a 3-conv CNN on 8x8 inputs, tens of optimizer steps on
one thread) and checks what the composition promises, not only that it runs: the sparsity and
the mask of the first method survive the second, patterns stay valid at every step, and exported
or physically compacted models compute what the masked model computed.

Stacks (one test, or one parametrised test, each):

* GraNet, then an SMS soup on GraNet's mask;
* PDP 2:4, then AST's distillation fine-tune on the same 2:4 pattern;
* TRP low-rank decomposition, then LAPP channel pruning and surgery;
* any unstructured method, then compact export, then CSR inference;
* an LTH ticket, then an SMS soup on the ticket's mask;
* channel pruning and surgery, then the Scratch-E / Scratch-B baselines.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import sparse_sms as sms
from sparse_ast import AdaptiveSparseTrainer
from sparse_granet import GraNet
from sparse_lapp import LAPP, add_bypasses, compact
from sparse_lth import LotteryTicket
from sparse_pdp import PDP
from sparse_trp import TRP, ValueThreshold
from sparsecore import GMP, IMP, NM, SET, SNIP, OneShotMagnitude, RandomPruning, RigL
from sparsecore.evaluation import count_flops, scratch_budgets
from sparsecore.export import (
    CSRLinear,
    compact_size_report,
    load_compact,
    remove_channels,
    save_compact,
    to_sparse_inference,
)
from sparsecore.testing import tiny_mlp

torch.set_num_threads(1)

N_TRAIN = 256
BATCH = 32


# ---------------------------------------------------------------------- data and loops
def vector_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """16-feature inputs labelled by a fixed random linear teacher (4 classes, learnable)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN, 16, generator=gen)
    teacher = torch.randn(16, 4, generator=gen)
    return x, (x @ teacher).argmax(1)


def image_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """1x8x8 inputs, 4 classes from the signs of two quadrant means."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN, 1, 8, 8, generator=gen)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0).long()
    return x, y


def train(model, optimizer, x, y, steps, *, method=None, seed=0, loss_fn=None, each_step=None):
    """A plain loop (the methods act through the optimizer hooks); returns the last loss."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(0, len(x), (BATCH,), generator=gen)
        if method is not None and method.needs_calibration and method.step == 0:
            method.calibrate([(x[idx], y[idx])])
        task = F.cross_entropy(model(x[idx]), y[idx])
        loss = loss_fn(task) if loss_fn is not None else task
        if method is not None and loss_fn is None:
            loss = loss + method.regularization()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if each_step is not None:
            each_step()
    return float(loss)


def sgd(model: nn.Module, lr: float = 0.05) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def masks_of(method) -> dict[str, torch.Tensor]:
    return {n: m.detach().clone() for n, m in method.masks.masks().items()}


def weights(model: nn.Module, names) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach() for n in names}


def global_sparsity(masks: dict[str, torch.Tensor]) -> float:
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


# ---------------------------------------------------------------------- SMS on a given mask
def soup_on_mask(sparse: nn.Module, masks, x, y, ingredients: int = 3, epochs: int = 1):
    """SMS's retrain-and-merge on a *given* shared mask, from SMS's public pieces.

    ``sms.run`` always prunes (by magnitude, from a dense model) before retraining, so a mask
    found by another method enters SMS the way ``sms.run`` hands its own phase mask to the
    ingredients: ``SparseModelSoup(...).setup(copy, masks=shared)`` (install the mask, prune
    nothing), SMS's recipes (``ingredients_for``: one seed per ingredient), SMS's retraining
    loop (``make_train_fn``), then ``merge`` (which refuses ingredients with different masks).

    Returns:
        ``(soup, ingredient_states)``: the soup as a plain model, and each ingredient's state
        dict (mask buffers included).
    """
    sparsity = global_sparsity(masks)
    config = sms.SMSConfig(
        sparsity=sparsity, n_phases=1, n_ingredients=ingredients, retrain_epochs=epochs,
        max_lr=0.05, weight_decay=0.0, bn_recalibration_fraction=0.0,
    )  # fmt: skip
    train_fn = sms.make_train_fn(x, y, batch_size=BATCH)
    states = []
    for recipe in sms.ingredients_for(config, phase=1, max_lr=0.05, sparsity=sparsity):
        model = copy.deepcopy(sparse)
        method = sms.SparseModelSoup(config).setup(model, masks=masks, phases_done=1)
        train_fn(model, method, recipe)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    soup = copy.deepcopy(sparse)
    soup.load_state_dict(sms.plain_state(sms.merge(states)))
    return soup, states


def assert_soup_keeps_mask(soup, states, sparse, masks):
    """The soup's zero set is exactly the shared mask's complement; it is the ingredients' mean."""
    params = weights(soup, masks)
    start = weights(sparse, masks)
    for name, mask in masks.items():
        key = name + "_mask"
        for i, state in enumerate(states):
            assert torch.equal(state[key], mask), f"ingredient {i} left the shared mask on {name}"
            assert not state[name][~mask].any(), f"ingredient {i}: pruned weights of {name} moved"
        # The soup is the uniform average of the ingredients (float64 accumulation in SMS).
        mean = torch.stack([s[name].double() for s in states]).mean(0).float()
        torch.testing.assert_close(params[name], mean, rtol=1e-6, atol=1e-7)
        assert torch.equal(params[name] != 0, mask), f"soup zero set differs from mask on {name}"
        # The ingredients really trained apart (else the soup would prove nothing).
        assert not torch.equal(states[0][name], states[1][name]), name
        assert not torch.equal(params[name], start[name]), name
    nnz = sum(int((p != 0).sum()) for p in params.values())
    assert nnz == sum(int(m.sum()) for m in masks.values())


# ---------------------------------------------------------------------- 1. GraNet -> SMS
def test_granet_mask_becomes_the_shared_mask_of_an_sms_soup():
    """GraNet trains a sparse model; its mask is the shared mask of an SMS soup.

    "GraNet runs as SMS ingredients" cannot mean GraNet regenerating inside each ingredient:
    regeneration moves each ingredient's mask differently and a sparse soup needs one shared mask
    (averaging different masks densifies the model). The test shows that too: an ingredient
    retrained *with* GraNet's regeneration has a different mask and ``sms.merge`` refuses it.
    The honest composition is GraNet's dynamic-sparse mask as the mask SMS's ingredients share.
    """
    x, y = vector_data()
    model = tiny_mlp(0)
    optimizer = sgd(model)
    granet = GraNet(sparsity=0.75, init_density=0.5, update_every=5, end_step=30, total_steps=50)
    granet.setup(model, optimizer)
    train(model, optimizer, x, y, 50)
    assert sum(sum(h["regrown"].values()) for h in granet.history) > 0, "no regeneration ran"
    masks = masks_of(granet)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == math.floor(total * 0.25 + 1e-9)
    sparse = granet.finalize()

    soup, states = soup_on_mask(sparse, masks, x, y)
    assert_soup_keeps_mask(soup, states, sparse, masks)
    assert torch.isfinite(soup(x[:8])).all()

    # GraNet regeneration inside an ingredient breaks the shared mask: the soup refuses it.
    rogue = copy.deepcopy(sparse)
    rogue_opt = sgd(rogue)
    regrow = GraNet(sparsity=0.75, init_density=0.3, update_every=5, end_step=5, total_steps=10)
    regrow.setup(rogue, rogue_opt)
    regrow.masks.update_all(masks)
    train(rogue, rogue_opt, x, y, 10, seed=1)
    assert any(not torch.equal(regrow.masks.mask(n), m) for n, m in masks.items())
    with pytest.raises(ValueError, match="share one mask"):
        sms.merge([states[0], {k: v.clone() for k, v in rogue.state_dict().items()}])


# ---------------------------------------------------------------------- 2. PDP 2:4 -> AST
@pytest.mark.parametrize("mask_update_every", [None, 5], ids=["pdp-mask-fixed", "ast-flips"])
def test_pdp_two_four_then_ast_distillation_keeps_the_pattern(mask_update_every):
    """PDP finds 2:4 masks; AST fine-tunes the hard-masked model with distillation (STE).

    The teacher is the dense model PDP started from (``with_teacher``), so AST distils the dense
    function into the 2:4 model. AST's first mask is computed from the PDP model's weights, whose
    pruned entries are exactly zero, so it is PDP's mask. With ``mask_update_every=None`` (the
    official ``--change_mask False``) the mask stays PDP's for the whole fine-tune; with AST's
    mask recomputation it may flip, but every group of 4 keeps exactly 2 at every step.
    """
    x, y = vector_data()
    dense = tiny_mlp(0)
    optimizer = sgd(dense, lr=0.1)
    train(dense, optimizer, x, y, 30)
    teacher = copy.deepcopy(dense).eval()

    model = copy.deepcopy(dense)
    optimizer = sgd(model)
    pdp = PDP(pattern="2:4", begin_step=0, end_step=20, update_every=5, tau=0.1, relative_tau=True)
    pdp.setup(model, optimizer)
    train(model, optimizer, x, y, 25)
    pdp_masks = pdp.final_masks()
    model = pdp.finalize()
    two_four = NM(2, 4, dim=1)
    for name, mask in pdp_masks.items():
        assert two_four.is_valid(mask), name
        assert torch.equal(weights(model, [name])[name] != 0, mask), name

    def kl_to_teacher(m: nn.Module) -> float:
        m.eval()
        with torch.no_grad():
            out = F.kl_div(
                F.log_softmax(m(x) / 2, -1), F.log_softmax(teacher(x) / 2, -1),
                log_target=True, reduction="batchmean",
            )  # fmt: skip
        m.train()
        return float(out)

    before = kl_to_teacher(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    ast = AdaptiveSparseTrainer(
        pattern="2:4", mask_update_every=mask_update_every, slorb=False, srste_decay=1e-3,
        increase_steps=10,
    ).with_teacher(teacher)  # fmt: skip
    ast.setup(model, optimizer)
    assert set(ast.masks.names) == set(pdp_masks)
    for name, mask in pdp_masks.items():
        assert torch.equal(ast.masks.mask(name), mask), f"AST did not start from PDP's {name}"

    distill_terms = []

    def check_pattern() -> None:
        for name, mask in ast.masks.masks().items():
            assert two_four.is_valid(mask), f"step {ast.step}: {name} left 2:4"
            if mask_update_every is None:
                assert torch.equal(mask, pdp_masks[name]), f"step {ast.step}: {name} moved"

    def loss_fn(task: torch.Tensor) -> torch.Tensor:
        term = ast.regularization()
        distill_terms.append(float(term))
        return ast.config.alpha_task * task + term

    train(model, optimizer, x, y, 30, loss_fn=loss_fn, each_step=check_pattern)
    assert all(t > 0 for t in distill_terms), "the distillation term was not active"
    final_masks = masks_of(ast)
    if mask_update_every is not None:  # the adaptive variant really moved the masks
        assert sum(flips for _, flips in ast.flip_history) > 0
        assert any(not torch.equal(final_masks[n], m) for n, m in pdp_masks.items())
    model = ast.finalize()
    after = kl_to_teacher(model)
    assert after < before, f"distillation did not move the 2:4 model toward the teacher: {after}"
    for name, mask in final_masks.items():
        w = weights(model, [name])[name]
        assert torch.equal(w != 0, mask), name
        assert two_four.is_valid(w != 0), f"{name}: exported weights are not 2:4"
        if mask_update_every is None:
            assert torch.equal(mask, pdp_masks[name])


# ---------------------------------------------------------------------- 3. TRP -> LAPP
def small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )  # fmt: skip


def test_trp_low_rank_then_lapp_channels_and_surgery():
    """TRP trains and decomposes a CNN; LAPP prunes channels of the decomposed CNN; surgery.

    TRP's decomposition uses the ranks its last substitution left (``ValueThreshold(1e-4)``: the
    discarded singular values are ~0), so it is exact. LAPP then treats the factor convolutions
    as ordinary ones (their rank channels are prunable units too) and ``compact`` removes what it
    masked; the compacted model must compute the masked model's outputs.
    """
    x, y = image_data()
    example = x[:16]
    model = small_cnn()
    optimizer = sgd(model)
    trp = TRP(scheme="NC", energy=0.8, nuclear_weight=3e-4).setup(model, optimizer)
    train(model, optimizer, x, y, 20)
    trp.finalize()
    model.eval()
    decomposed, plan = trp.decompose(ValueThreshold(1e-4))
    decomposed.eval()
    assert plan["ranks"] == {trp.layers[n]: r[0] for n, r in trp.ranks.items()}
    torch.testing.assert_close(decomposed(x[:64]), model(x[:64]), rtol=1e-4, atol=1e-5)
    one = x[:1]
    dense_macs = count_flops(model, one).dense
    low_rank_macs = count_flops(decomposed, one).dense
    assert low_rank_macs < dense_macs

    sparsity = 0.4
    units = LAPP.prunable_convs(decomposed, (1, 8, 8))
    factor_convs = {f"{name}.0" for name in plan["ranks"]}
    assert factor_convs <= set(units), "LAPP does not see TRP's factor convolutions"
    add_bypasses(decomposed, units)
    decomposed.train()
    optimizer = sgd(decomposed)
    lapp = LAPP(sparsity=sparsity, input_shape=(1, 8, 8), prune_steps=15).setup(
        decomposed, optimizer
    )
    train(decomposed, optimizer, x, y, 20, method=lapp)
    assert lapp.frozen
    masks = masks_of(lapp)
    assert any(not m.all() for m in masks.values()), "LAPP pruned nothing"
    for name, mask in masks.items():
        assert lapp.masks.targets[name].pattern.is_valid(mask), name
    decomposed.eval()
    masked = copy.deepcopy(decomposed)
    with torch.no_grad():
        reference = masked(x[:64])
    small = compact(lapp, example)
    small.eval()
    with torch.no_grad():
        torch.testing.assert_close(small(x[:64]), reference, rtol=0, atol=1e-5)
    assert not any(k.endswith("_mask") for k in small.state_dict())
    compact_macs = count_flops(small, one).dense
    assert compact_macs <= (1 - sparsity) * low_rank_macs * (1 + 1e-9)
    assert compact_macs < low_rank_macs < dense_macs


# ---------------------------------------------------------------------- 4. export -> CSR
STEPS = 40


def _one_shot(cls, **kw):
    return lambda: cls(sparsity=0.75, **kw)


UNSTRUCTURED = {
    "magnitude": _one_shot(OneShotMagnitude),
    "random": _one_shot(RandomPruning),
    "snip": _one_shot(SNIP, scope="global"),
    "gmp": _one_shot(GMP, end_step=30, update_every=5),
    "set": lambda: SET(sparsity=0.75, update_every=5, end_step=30),
    "rigl": lambda: RigL(sparsity=0.75, update_every=5, end_step=30),
    "granet": lambda: GraNet(sparsity=0.75, update_every=5, end_step=30, total_steps=STEPS),
    "pdp": lambda: PDP(sparsity=0.75, begin_step=5, end_step=30, update_every=5),
    "sms": lambda: sms.SparseModelSoup(sparsity=0.75, n_phases=2),
    "imp": lambda: IMP(fraction=0.5),
    "lth": lambda: LotteryTicket(fraction=0.5, rewind_step=2),
}


@pytest.mark.parametrize("name", sorted(UNSTRUCTURED))
def test_unstructured_then_compact_export_then_csr_inference(name, tmp_path):
    """Train with the method, finalize, save compact, load bit-exact, run as CSR = dense."""
    x, y = vector_data()
    model = tiny_mlp(0)
    optimizer = sgd(model)
    method = UNSTRUCTURED[name]().setup(model, optimizer)
    if isinstance(method, IMP):  # IMP / LTH: two rounds of 50% with rewinding
        train(model, optimizer, x, y, STEPS // 2, method=method)
        for level in (1, 2):
            method.prune_round()
            optimizer = sgd(model)
            if isinstance(method, LotteryTicket):
                method.rewind(optimizer)  # attaches the new optimizer
            else:
                method.rewind()
                method.attach(optimizer)
            train(model, optimizer, x, y, STEPS // 2, method=method, seed=level)
    else:
        train(model, optimizer, x, y, STEPS, method=method)
    masks = masks_of(method)
    assert global_sparsity(masks) == pytest.approx(0.75, abs=0.02), name
    final = method.finalize()
    for n, mask in masks.items():
        assert not weights(final, [n])[n][~mask].any(), f"{name}: masked weights of {n} not zero"

    path = tmp_path / f"{name}.safetensors"
    save_compact(final, path)
    report = compact_size_report(path)
    assert report["sparse_tensors"] == len(masks), "every pruned tensor is stored sparse"
    restored = tiny_mlp(1)  # different initial values: everything must come from the file
    load_compact(path, restored)
    original, loaded = final.state_dict(), restored.state_dict()
    assert original.keys() == loaded.keys()
    for key, value in original.items():
        # Bit-exact, except that a pruned -0.0 comes back +0.0 (the format's documented choice).
        want = (value + 0.0).view(torch.int32)
        assert torch.equal(loaded[key].view(torch.int32), want), f"{name}: {key} changed"
    stored = report["stored_values"]
    assert stored < sum(v.numel() for v in original.values()), "compact stored every value"

    csr = to_sparse_inference(restored, min_sparsity=0.5)
    converted = {n for n, m in csr.named_modules() if isinstance(m, CSRLinear)}
    expected = {n.removesuffix(".weight") for n, m in masks.items() if 1 - m.float().mean() >= 0.5}
    assert converted == expected and converted, f"{name}: converted {converted}"
    for module_name in converted:
        # CSR stores the nonzeros: the kept entries, less any kept weight that is exactly zero
        # (e.g. regrown by GraNet / RigL at the last update and never trained since).
        weight = weights(final, [module_name + ".weight"])[module_name + ".weight"]
        nnz = csr.get_submodule(module_name).nnz
        assert nnz == int(torch.count_nonzero(weight)) <= int(masks[module_name + ".weight"].sum())
    restored.eval()
    csr.eval()
    probe = torch.randn(64, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(csr(probe), restored(probe), rtol=0, atol=1e-5)
        torch.testing.assert_close(csr(probe), final.eval()(probe), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- 5. LTH -> SMS
def test_lottery_ticket_mask_becomes_the_shared_mask_of_an_sms_soup():
    """IMP with rewinding finds a ticket; SMS soups ingredients retrained on the ticket's mask."""
    x, y = vector_data()
    model = tiny_mlp(0)
    spec_lr = 0.05
    optimizer = sgd(model, spec_lr)
    ticket = LotteryTicket(fraction=0.5, rewind_step=2).setup(model, optimizer)
    train(model, optimizer, x, y, 20)
    for level in (1, 2):
        ticket.prune_round()
        optimizer = sgd(model, spec_lr)
        ticket.rewind(optimizer)
        train(model, optimizer, x, y, 20, seed=level)
    masks = masks_of(ticket)
    assert global_sparsity(masks) == pytest.approx(0.75, abs=1e-9)
    sparse = ticket.finalize()

    soup, states = soup_on_mask(sparse, masks, x, y)
    assert_soup_keeps_mask(soup, states, sparse, masks)
    assert torch.isfinite(soup(x[:8])).all()


# ---------------------------------------------------------------------- 6. structured -> scratch
def unpadded_cnn(seed: int = 0) -> nn.Sequential:
    """Dead channels of the first conv (a BatchNorm shift) reach an *unpadded* conv, whose bias
    absorbs them exactly, so surgery can remove every masked channel."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4),
    )  # fmt: skip


EPOCHS = 2
STEPS_PER_EPOCH = N_TRAIN // BATCH


def magnitude_channels(x, y):
    """Dense training, one-shot channel magnitude pruning (classifier kept), a fine-tuning
    epoch, surgery with the masks. Returns ``(dense_macs, masks, reference, compacted)``."""
    model = unpadded_cnn()
    optimizer = sgd(model)
    train(model, optimizer, x, y, EPOCHS * STEPS_PER_EPOCH)
    dense_macs = count_flops(model, x[:1]).dense
    pruner = OneShotMagnitude(sparsity=0.5, pattern="channel", exclude=("8.weight",))
    pruner.setup(model, optimizer)
    train(model, optimizer, x, y, STEPS_PER_EPOCH)
    masks = masks_of(pruner)
    for name, mask in masks.items():
        assert pruner.masks.targets[name].pattern.is_valid(mask), name
    pruned = pruner.finalize().eval()
    with torch.no_grad():
        reference = pruned(x[:64])
    removed = remove_channels(pruned, x[:16], masks)
    width = {n.removesuffix(".weight"): m.shape[0] for n, m in masks.items()}
    kept = {n.removesuffix(".weight"): int(m.flatten(1).any(1).sum()) for n, m in masks.items()}
    assert removed == {n: width[n] - kept[n] for n in kept}, "not every masked channel removed"
    return dense_macs, masks, reference, pruned


def lapp_channels(x, y):
    """LAPP from scratch at a 50% FLOPs budget on a padded CNN with bypasses, then ``compact``.
    Returns ``(dense_macs, masks, reference, compacted)``; dense MACs are without bypasses."""
    model = small_cnn()
    dense_macs = count_flops(model, x[:1]).dense
    add_bypasses(model, LAPP.prunable_convs(model, (1, 8, 8)))
    optimizer = sgd(model)
    lapp = LAPP(sparsity=0.5, input_shape=(1, 8, 8), prune_steps=STEPS_PER_EPOCH)
    lapp.setup(model, optimizer)
    train(model, optimizer, x, y, EPOCHS * STEPS_PER_EPOCH, method=lapp)
    assert lapp.frozen
    masks = masks_of(lapp)
    model.eval()
    with torch.no_grad():
        reference = copy.deepcopy(model)(x[:64])
    compacted = compact(lapp, x[:16]).eval()
    assert count_flops(compacted, x[:1]).dense <= 0.5 * dense_macs * (1 + 1e-9)
    return dense_macs, masks, reference, compacted


@pytest.mark.parametrize("prune", [magnitude_channels, lapp_channels], ids=["magnitude", "lapp"])
def test_channel_pruning_then_scratch_e_and_scratch_b(prune):
    """Channel pruning + surgery, then the pruned architecture re-initialised and trained from
    scratch for the Scratch-E and Scratch-B budgets ("Rethinking the Value of Network Pruning").
    """
    x, y = image_data()
    one = x[:1]
    dense_macs, masks, reference, pruned = prune(x, y)
    params = dict(pruned.named_parameters())
    assert any(not m.all() for m in masks.values()), "nothing was pruned"
    for name, mask in masks.items():  # every masked channel is physically gone
        kept = int(mask.reshape(mask.shape[0], -1).any(1).sum())
        assert kept > 0, f"{name}: a layer lost every channel"
        assert params[name].shape[0] == kept, f"{name}: {params[name].shape[0]} != {kept}"
    assert not any(k.endswith("_mask") for k in pruned.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(pruned(x[:64]), reference, rtol=0, atol=1e-5)
    pruned_macs = count_flops(pruned, one).dense
    assert pruned_macs < dense_macs

    scratch_e, scratch_b = scratch_budgets(EPOCHS, pruned_macs, dense_macs)
    factor = min(max(dense_macs / pruned_macs, 1.0), 2.0)
    assert scratch_e == EPOCHS
    assert scratch_b == max(EPOCHS, math.ceil(EPOCHS * factor - 1e-9))
    assert EPOCHS < scratch_b <= 2 * EPOCHS

    shapes = [p.shape for p in pruned.parameters()]
    for budget in (scratch_e, scratch_b):
        scratch = copy.deepcopy(pruned)
        torch.manual_seed(100 + budget)
        for module in scratch.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        assert [p.shape for p in scratch.parameters()] == shapes
        assert count_flops(scratch, one).dense == pruned_macs
        first_conv = next(m for m in scratch.modules() if isinstance(m, nn.Conv2d))
        pruned_conv = next(m for m in pruned.modules() if isinstance(m, nn.Conv2d))
        assert not torch.equal(first_conv.weight, pruned_conv.weight), "not re-initialised"
        assert torch.count_nonzero(first_conv.weight) == first_conv.weight.numel()
        with torch.no_grad():
            first = F.cross_entropy(scratch.eval()(x), y)
        scratch_opt = sgd(scratch)
        train(scratch, scratch_opt, x, y, budget * STEPS_PER_EPOCH, seed=budget)
        assert len(scratch_opt.state_dict()["state"]) == len(shapes), "not every tensor trained"
        with torch.no_grad():
            last = F.cross_entropy(scratch.eval()(x), y)
        assert last < first, f"Scratch ({budget} epochs) did not learn: {first} -> {last}"
