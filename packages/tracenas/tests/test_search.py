"""Search space constraints, operators, the search loop and the method's masks / deploy."""

import random

import pytest
import torch

from sparse_tracenas import (
    Candidate,
    SearchSpace,
    TraceNAS,
    TraceNASConfig,
    breed,
    evolutionary_search,
    initial_candidate,
)
from sparse_tracenas.evolution import mutable_segment

FAST = dict(population=4, iterations=2, elites=2, mlp_block=16, min_layers=2, window=0.1)


def _space(model, target=0.3, window=0.1):
    return SearchSpace.from_model(model, target, window, mlp_block=16, min_layers=2)


def test_space_counts_match_the_model(model):
    space = _space(model)
    params = dict(model.named_parameters())
    per_layer = sum(
        params[f"model.layers.0.{n}.weight"].numel()
        for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    )  # fmt: skip
    assert space.total_params == 4 * per_layer
    assert space.kv_groups * space.group_params + space.blocks * space.block_params == per_layer
    assert (space.group_size, space.blocks, space.min_groups, space.min_blocks) == (2, 4, 1, 2)
    assert space.sparsity(space.full()) == 0.0


def test_every_candidate_respects_gqa_min_heads_and_window(model):
    space = _space(model)
    rng = random.Random(0)
    importance = {"attn": [1.0, 0.5, 2.0, 0.1], "mlp": [0.3, 1.0, 0.2, 4.0]}
    valid = []
    for _ in range(200):
        c = initial_candidate(space, importance, rng, 0.72, 0.15)
        if space.is_valid(c):
            valid.append(c)
    assert len(valid) > 50
    for _ in range(300):
        c = breed(valid[:4], space, rng, crossover_prob=0.7, mutation_prob=0.5,
                  mutation_strength=0.3, depth_mutation=0.2, max_layer_pruning=0.72)  # fmt: skip
        if space.is_valid(c):
            valid.append(c)
    assert len(valid) > 100
    for c in valid:
        assert c.depth >= space.min_layers
        assert abs(space.sparsity(c) - 0.3) <= 0.1 + 1e-12
        for i in range(4):
            if c.layers[i]:
                heads = space.kept_heads(c, i)
                assert heads % space.group_size == 0 and heads >= 2  # min_groups 1 x group 2
                assert 2 <= c.mlp[i] <= 4


def test_problems_name_each_violation(model):
    space = _space(model)
    bad = Candidate((True, False, False, False), (0, 2, 2, 2), (5, 4, 4, 4))
    text = " | ".join(space.problems(bad))
    assert "min_layers" in text and "key/value groups" in text and "MLP blocks" in text
    assert "outside 0.3" in text


def test_depth_crossover_only_changes_the_upper_segment():
    assert list(mutable_segment(32)) == list(range(13, 32))
    assert list(mutable_segment(4)) == [0, 1, 2, 3]


def test_search_is_deterministic_and_stays_in_the_window(model, batches):
    cfg = TraceNASConfig(sparsity=0.3, **FAST)
    a = evolutionary_search(model, batches, cfg, seed=11)
    b = evolutionary_search(model, batches, cfg, seed=11)
    assert [s.candidate for s in a.history] == [s.candidate for s in b.history]
    assert [s.phi for s in a.history] == [s.phi for s in b.history]
    assert a.best.phi == max(s.phi for s in a.history)
    assert len({s.candidate.key() for s in a.history}) == len(a.history)
    assert all(abs(s.sparsity - 0.3) <= 0.1 + 1e-12 for s in a.history)
    assert {s.generation for s in a.history} == {0, 1, 2}


def test_method_masks_equal_the_shrunk_model(model, batches):
    method = TraceNAS(sparsity=0.3, **FAST).setup(model)
    method.calibrate(batches)
    space, c = method.space, method.candidate
    assert abs(method.masks.sparsity() - space.sparsity(c)) < 1e-12
    kept = sum(int(m.sum()) for m in method.masks.masks().values())
    assert kept == space.params(c)
    ids = batches[0]
    with torch.no_grad():
        masked = model(input_ids=ids).logits
    small = method.deploy()
    with torch.no_grad():
        shrunk = small(input_ids=ids).logits
    assert torch.allclose(masked, shrunk, atol=1e-5)
    assert small.config.num_hidden_layers == c.depth


def test_bad_options_and_models_raise_before_touching(model):
    with pytest.raises(ValueError, match="proxy"):
        TraceNASConfig(proxy="spearman")
    with pytest.raises(ValueError, match="window"):
        TraceNASConfig(window=0.0)
    with pytest.raises(TypeError, match="population"):
        TraceNASConfig(population=2.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="mlp_block"):
        TraceNAS(mlp_block=48).setup(model)
    with pytest.raises(ValueError, match="out of reach"):
        TraceNAS(sparsity=0.95, window=0.01, mlp_block=16).setup(model)
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    from sparsecore.bench import tiny_bert

    with pytest.raises(ValueError, match="Llama-style"):
        TraceNAS().setup(tiny_bert(num_labels=2))
