"""Stage-2 specialisation, exact deployment of the routed model, exact counts after removal."""

import copy
import os

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel

from sparse_shrp import (
    SHRP,
    deploy_routed,
    encoder_params,
    expert_layers,
    routing_entropy,
    shrink_encoder,
    to_expert_attention,
)

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HIDDEN, HEADS, FFN, VOCAB = 32, 4, 64, 60


def encoder(layers: int = 2, seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    return BertModel(config).eval()


class Tagger(nn.Module):
    """Per-token binary tagging on top of the encoder."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert = bert
        self.out = nn.Linear(HIDDEN, 2)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.bert(input_ids=input_ids).last_hidden_state)


def specialising_model(seed: int) -> Tagger:
    """One layer whose head 0 alone carries information (the others' values are zero)."""
    bert = encoder(layers=1, seed=seed)
    with torch.no_grad():
        value = bert.encoder.layer[0].attention.self.value
        value.weight[HIDDEN // HEADS :] = 0.0
        value.bias[HIDDEN // HEADS :] = 0.0
    to_expert_attention(bert, seed=seed + 1)
    return Tagger(bert)


def train_stage2_entropy(seed: int, router_lr: float) -> tuple[float, float]:
    model = specialising_model(seed)
    router = [p for n, p in model.named_parameters() if "router" in n]
    rest = [p for n, p in model.named_parameters() if "router" not in n]
    opt = torch.optim.Adam([{"params": rest, "lr": 1e-2}, {"params": router, "lr": router_lr}])
    shrp = SHRP(sparsity=0.0, balance_steps=5, prune_step=10_000).setup(model, opt)  # no pruning
    gen = torch.Generator().manual_seed(100 + seed)
    probe = [{"input_ids": torch.randint(0, VOCAB, (8, 10), generator=gen)}]
    start = None
    for step in range(40):
        if step == 5:
            start = routing_entropy(model, probe)
        ids = torch.randint(0, VOCAB, (8, 10), generator=gen)
        labels = (ids < VOCAB // 2).long().roll(1, dims=1)  # needs attention to the neighbour
        loss = nn.functional.cross_entropy(model(ids).reshape(-1, 2), labels.reshape(-1))
        loss = loss + shrp.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return start, routing_entropy(model, probe)


def test_routing_entropy_falls_during_stage2_when_heads_specialise() -> None:
    seed = 0
    start, end = train_stage2_entropy(seed, router_lr=5e-2)
    assert end < 0.8 * start
    frozen_start, frozen_end = train_stage2_entropy(seed, router_lr=0.0)
    # a frozen router (only its inputs, the embeddings, move) stays near uniform: caught
    assert frozen_end > 0.95 * frozen_start and end < 0.8 * frozen_end


def test_deployed_logits_equal_routed_logits_with_several_heads_per_layer() -> None:
    bert = to_expert_attention(encoder(layers=3), seed=5)
    shrp = SHRP(sparsity=0.5, balance_steps=0, prune_step=1).setup(bert)
    usage = {n: torch.tensor([5.0, 1.0, 4.0, 0.0]) for n in shrp.layers}
    usage[next(iter(usage))] = torch.tensor([0.0, 0.0, 0.0, 9.0])  # one layer keeps one head
    shrp.prune_by_usage(usage)
    shrp.finalize()
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, VOCAB, (3, 11), generator=gen)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        routed = bert.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    deployed = deploy_routed(copy.deepcopy(bert))
    heads = [m.num_heads for m in expert_layers(deployed).values()]
    assert sum(heads) == 6  # 12 heads, budget 50%: exactly 6 physically remain
    with torch.no_grad():
        got = deployed(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(got, routed, atol=1e-6, rtol=0)
    assert encoder_params(deployed) < encoder_params(bert)


def test_exact_param_counts_after_ffn_layer_and_head_removal() -> None:
    bert = encoder(layers=3)
    head, d = HIDDEN // HEADS, HIDDEN
    layer = 4 * (d * d + d) + 2 * d + (d * FFN + FFN) + (FFN * d + d) + 2 * d
    assert encoder_params(bert) == 3 * layer
    small = shrink_encoder(bert, ffn_ratio=0.5, keep_layers=[0, 2])
    kept_ffn = FFN - FFN // 2
    small_layer = layer - (FFN - kept_ffn) * (2 * d + 1)
    assert encoder_params(small) == 2 * small_layer
    assert small.config.num_hidden_layers == 2 and small.config.intermediate_size == kept_ffn
    assert encoder_params(bert) == 3 * layer  # the input model is not modified
    to_expert_attention(small)
    # W_O (d x d + d) becomes the shared expander (head x d + d); a router (HEADS x (d + 1))
    expert_layer = small_layer - d * d + head * d + HEADS * (d + 1)
    assert encoder_params(small) == 2 * expert_layer
    shrp = SHRP(sparsity=0.5, balance_steps=0, prune_step=1).setup(small)
    shrp.prune_by_usage({n: torch.tensor([4.0, 3.0, 2.0, 1.0]) for n in shrp.layers})
    shrp.finalize()
    deploy_routed(small)
    per_head = 3 * (d * head + head) + (d + 1)  # its query/key/value rows and router row
    assert encoder_params(small) == 2 * expert_layer - 4 * per_head


def test_bad_structure_arguments_raise_before_touching_the_model() -> None:
    bert = encoder(layers=2)
    with pytest.raises(ValueError, match="ffn_ratio"):
        shrink_encoder(bert, ffn_ratio=1.0)
    with pytest.raises(ValueError, match="keep_layers"):
        shrink_encoder(bert, keep_layers=[0, 0])
    with pytest.raises(ValueError, match="keep_layers"):
        shrink_encoder(bert, keep_layers=[])
    with pytest.raises(ValueError, match="ExpertAttention"):
        deploy_routed(bert)
