"""ARRoL on a Wanda-pruned policy: rollout pruning during RL keeps the weight sparsity exact.

The core's one-shot Wanda (50%, through the registry) prunes a tiny Llama on the RL toy's
character vocabulary and stays set up on the RL optimizer, so its masks are re-applied after every
optimizer step (hard mode). ARRoL (a procedure, through its registry) then prunes rollouts inside
GRPO steps on that sparse policy. The composition must keep exactly ``round(K·N)`` rollouts per
prompt, train the policy (surviving weights move), and leave every Wanda zero at zero.
"""

from __future__ import annotations

import torch

from sparsecore import available_methods, available_procedures
from sparsecore.bench import tiny_llama
from sparsecore.rl import CHAR_VOCAB, GRPOConfig, ReversalTask

torch.set_num_threads(1)


class _EvenFirstToken(ReversalTask):
    """A reward a random policy earns about half the time (so advantages are non-zero)."""

    def reward(self, problem, completion):
        return float(int(completion[0]) % 2 == 0)


def test_wanda_then_arrol_grpo():
    model = tiny_llama(
        seed=0, vocab_size=CHAR_VOCAB.size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(0)
    calib = [torch.randint(3, CHAR_VOCAB.size, (2, 12), generator=gen) for _ in range(2)]
    wanda = available_methods()["wanda"](sparsity=0.5).setup(model, optimizer)
    wanda.calibrate(calib)
    zeros = {n: p.detach() == 0 for n, p in model.named_parameters() if "proj" in n}
    assert sum(int(z.sum()) for z in zeros.values()) == sum(z.numel() for z in zeros.values()) // 2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    cls = available_procedures()["arrol"]
    task = _EvenFirstToken(5, 4)
    config = GRPOConfig(num_samples=8, max_new_tokens=task.max_answer_tokens + 1)
    with cls(keep_ratio=0.5, detect_step=2, seed=0).attach(model) as arrol:
        for step in range(3):
            problems = task.sample(4, torch.Generator().manual_seed(step))
            result = arrol.step(optimizer, task, problems, config, gen)
            batch = result.batch
            assert torch.bincount(batch.groups[batch.survivors]).tolist() == [4] * 4
            assert (batch.lengths[~batch.survivors] <= 2).all()
    for n, p in model.named_parameters():
        if n in zeros:
            assert (p[zeros[n]] == 0).all(), f"{n}: a Wanda zero moved"
    assert result.advantages.abs().sum() > 0
    for n, p in model.named_parameters():
        if n in zeros:
            assert not torch.equal(p[~zeros[n]], before[n][~zeros[n]]), f"{n}: not trained"

    assert len(arrol.history) == 3
