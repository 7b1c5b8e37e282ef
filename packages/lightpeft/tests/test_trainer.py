"""The Trainer path: the callback sets up, the gates get their own group, pruning happens."""

import torch

from sparse_lightpeft import LightPEFT
from sparse_lightpeft.trainer import LightPEFTTrainer
from sparsecore.adapters import add_lora
from sparsecore.bench import tiny_bert

torch.set_num_threads(1)


def test_trainer_path_estimates_prunes_and_lightens(tmp_path) -> None:
    from transformers import TrainingArguments

    model = tiny_bert(num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(1)
    model = add_lora(model, r=4, alpha=8, modules_to_save=["classifier"])
    gen = torch.Generator().manual_seed(0)
    data = [
        {"input_ids": torch.randint(1, 1000, (10,), generator=gen), "labels": int(i % 3)}
        for i in range(48)
    ]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=8,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_strategy="no",
        disable_tqdm=True,
    )
    method = LightPEFT(sparsity=0.5, estimate_steps=6, l1=1e-2)
    trainer = LightPEFTTrainer(model=model, args=args, train_dataset=data, lightpeft=method)
    assert method.gates is not None  # set up at on_init_end
    trainer.train()
    assert method.step == 8 and method.plan is not None
    groups = trainer.optimizer.param_groups
    gate_ids = {id(p) for p in method.gates.parameters()}
    own = [g for g in groups if g.get("lightpeft_gates")]
    assert len(own) == 1 and {id(p) for p in own[0]["params"]} == gate_ids
    assert all(id(p) not in gate_ids for g in groups if g is not own[0] for p in g["params"])
    assert method.recorder.rank_count == 3  # steps 3, 4, 5: the second half of 6
    counts = method.plan.counts()
    assert counts["heads_removed"] == 4 and counts["ffn_removed"] == 128
    x = torch.randint(1, 1000, (2, 10), generator=gen)
    light = method.lighten({"input_ids": x})
    model.eval()
    light.model.eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=x).logits, light.model(input_ids=x).logits, atol=1e-5)
