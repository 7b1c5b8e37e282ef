"""Reproduce Compresso's headline at CPU scale: the core's pretrained tiny Llama, stdlib text.

Paper: Guo et al., "Compresso: Structured Pruning with Collaborative Prompting Learns Compact
Large Language Models", arXiv 2310.05015. Claim checked: at equal parameters and equal training
data, Compresso (L0 gates + LoRA, collaborative prompt) beats one-shot structured pruning
followed by LoRA fine-tuning (LLM-Pruner-style magnitude / Taylor, Wanda-sp).

Per seed and target (fraction of the prunable projection weights removed), from the same
pretrained Llama (`sparsecore.bench.pretrained`), the same instruction examples
(`sparse_compresso.prompt.instruction_examples`) and the same number of optimizer steps:

* ``compresso``: LoRA r 8 / alpha 8 on q / v (``train.sh``), L0 phase then fixed gates
  (`Compresso`), every example wrapped in an official collaborative prompt in training and
  evaluation (default ``--prompt short``: the long one is 1,307 bytes, ten times the tiny
  model's context and about five times the cost per step), then `Compresso.compress` (merged,
  physically smaller);
* ``compresso-noprompt`` (ablation): the same with the plain Alpaca template;
* ``magnitude`` / ``taylor`` / ``wanda-sp`` / ``random``: `sparsecore.structures.importance`
  one-shot head + FFN pruning (``budget_masks``) to the decoder-layer parameters Compresso kept
  (same seed), then the same LoRA fine-tuning on the plain template; ``random`` is the
  matched-random control;
* ``dense``: the pretrained model, unpruned and not fine-tuned.

Metrics: perplexity on the held-out stdlib blocks (plain text, no prompt), ``instr-acc`` and
``mc-acc`` (`sparse_compresso.tasks`), parameters, and the latency of a forward of the smaller
model against the dense one (interleaved, medians; a shared 2-core machine).

Choices, labelled: [choice] the gates' ``reg_lr`` is raised to 0.5 (official 0.1 over
~400k steps) and the LoRA learning rate to 1e-3 (official 5e-5 / 4e-4) because the run is tens
of steps; [choice] no EOS token is appended to the responses (the byte vocabulary has none);
[choice] the baselines are scored with `sparsecore.structures.importance` and shrunk with a
1e-3 tolerance (``prune_structured`` checks at 1e-5, which the tiny model's logits exceed by
float noise).

    python benchmarks/reproduce.py            # 3 seeds, writes benchmarks/results.json
    python benchmarks/reproduce.py --quick    # 1 seed, tiny settings
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import time
from typing import Any

import torch
from torch import nn

VARIANTS = ("dense", "compresso", "compresso-noprompt", "magnitude", "taylor", "wanda-sp", "random")
CRITERIA = {"magnitude": "magnitude", "taylor": "taylor", "wanda-sp": "wanda"}
#: LoRA learning rate of every variant ([choice]: raised from the official 5e-5 / 4e-4 for a run
#: of tens of steps).
LR = 1e-3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings, 1 seed")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds")
    parser.add_argument("--size", default=None, help="pretrained size (micro / tiny)")
    parser.add_argument("--jobs", type=int, default=None, help="seed worker processes")
    parser.add_argument("--prompt", default=None, help="prompt variant of the prompt arm")
    parser.add_argument("--targets", type=float, nargs="+", default=None, help="sparsities")
    from sparsecore.evaluation.paths import default_results_path  # quick: tmp

    parser.add_argument("--out", default=str(default_results_path(__file__, argv)))
    return parser.parse_args(argv)


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"size": "micro", "seeds": 1, "targets": [0.5], "l0_steps": 6, "ft_steps": 2,
                "prompt": "short",
                "batch": 2, "train_examples": 64, "eval_examples": 8, "questions": 12,
                "variants": ["dense", "compresso", "magnitude", "random"], "jobs": 1,
                "latency_repeats": 3, "reg_lr": 3.0}  # fmt: skip
    return {"size": "tiny", "seeds": 3, "targets": [0.5], "l0_steps": 24, "ft_steps": 8,
            "prompt": "short", "batch": 4, "train_examples": 192, "eval_examples": 16,
            "questions": 24, "variants": list(VARIANTS), "jobs": 3, "latency_repeats": 5,
            "reg_lr": 0.5}  # fmt: skip


def _layer_params(model: nn.Module) -> int:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return sum(
        p.numel() for n, p in base.named_parameters() if ".layers." in n and "lora_" not in n
    )


def _layers(model: nn.Module) -> list[nn.Module]:
    from sparsecore.structures import describe

    return [lay.module for lay in describe(model).layers]


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if "lora_" not in n)


def _train(model: nn.Module, method: Any, data: list, variant: str, cfg: dict, seed: int) -> None:
    from sparse_compresso.tasks import collate

    gen = torch.Generator().manual_seed(20_000 + seed)
    steps = cfg["l0_steps"] + cfg["ft_steps"]
    model.train()
    opt = cfg["_opt"]
    for _ in range(steps):
        idx = torch.randint(len(data), (cfg["batch"],), generator=gen).tolist()
        batch = collate([data[i] for i in idx], cfg["_task"], variant)
        loss = model(**batch).loss
        if method is not None:
            loss = loss + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _lora(model: nn.Module, seed: int) -> nn.Module:
    from sparsecore.adapters import add_lora

    torch.manual_seed(30_000 + seed)  # the LoRA A init (not the weight seed)
    return add_lora(model, r=8, alpha=8.0, target_modules=["q_proj", "v_proj"])


def _evaluate(model: nn.Module, dense: nn.Module, variant: str, ev: dict, cfg: dict) -> dict:
    from sparse_compresso.tasks import choice_accuracy, instruction_accuracy
    from sparsecore.bench.lm import perplexity
    from sparsecore.evaluation.latency import compare_latency

    task = cfg["_task"]
    model.eval()
    ids = task.eval_blocks[:8]
    with torch.no_grad():
        ratio = compare_latency(
            lambda: model(input_ids=ids), lambda: dense(input_ids=ids),
            warmup=1, repeats=cfg["latency_repeats"],
        )  # fmt: skip
    return {
        "perplexity": perplexity(model, task, max_blocks=32),
        "instr_acc": instruction_accuracy(model, ev["examples"], task, variant),
        "mc_acc": choice_accuracy(model, ev["questions"], task),
        "params": sum(p.numel() for p in model.parameters()),
        "layer_params": _layer_params(model),
        "per_layer": [
            1.0 - _numel(a) / _numel(b) for a, b in zip(_layers(model), _layers(dense), strict=True)
        ],
        "latency_ratio": float(ratio),
    }


def _scores(dense: nn.Module, name: str, calib: list, seed: int) -> dict[str, list]:
    """Head and FFN scores of a baseline (`sparsecore.structures.importance`)."""
    from sparsecore.structures import describe
    from sparsecore.structures.importance import (
        collect_gradients,
        collect_input_norms,
        group_importance,
    )

    if name == "random":
        gen = torch.Generator().manual_seed(50_000 + seed)
        lay = describe(dense).layers
        return {
            "heads": [torch.rand(x.kv_heads, generator=gen) for x in lay],
            "ffn": [torch.rand(x.intermediate, generator=gen) for x in lay],
        }
    stats: dict[str, Any] = {}
    if name == "taylor":
        stats["gradients"] = collect_gradients(dense, calib)
    elif name == "wanda-sp":
        stats["input_norms"] = collect_input_norms(dense, calib)
    return {k: group_importance(dense, k, CRITERIA[name], **stats) for k in ("heads", "ffn")}


def run_seed(cfg: dict, seed: int) -> dict[str, dict[str, dict]]:
    """Every variant at every target for one seed."""
    from transformers.utils import logging as hf_logging

    from sparse_compresso import Compresso
    from sparse_compresso.prompt import instruction_examples
    from sparse_compresso.tasks import next_line_questions, split_texts
    from sparsecore.adapters import merge_lora
    from sparsecore.bench.lm import calibration_blocks, load_lm_task
    from sparsecore.bench.pretrained import LM_SIZES, pretrained_tiny_lm
    from sparsecore.structures import shrink
    from sparsecore.structures.importance import budget_masks

    hf_logging.set_verbosity_error()
    task = load_lm_task(seq_len=LM_SIZES[cfg["size"]]["seq_len"])
    cfg = {**cfg, "_task": task}
    dense = pretrained_tiny_lm(cfg["size"], progress=False)
    train_texts, eval_texts = split_texts(task)
    data = instruction_examples(train_texts, cfg["train_examples"], seed=seed)
    ev = {
        "examples": instruction_examples(eval_texts, cfg["eval_examples"], seed=1),
        "questions": next_line_questions(eval_texts, cfg["questions"], seed=2),
    }
    calib = [calibration_blocks(task, 4, seed=40_000 + seed + i) for i in range(2)]
    out: dict[str, dict[str, dict]] = {}
    for target in cfg["targets"]:
        res: dict[str, dict] = {}
        if "dense" in cfg["variants"]:
            res["dense"] = _evaluate(dense, dense, "none", ev, cfg)
        for name, variant in (("compresso", cfg["prompt"]), ("compresso-noprompt", "none")):
            if name not in cfg["variants"]:
                continue
            start = time.perf_counter()
            model = _lora(copy.deepcopy(dense), seed)
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
            method = Compresso(
                sparsity=target, prune_steps=cfg["l0_steps"], reg_lr=cfg["reg_lr"], seed=seed
            ).setup(model, opt)
            _train(model, method, data, variant, {**cfg, "_opt": opt}, seed)
            small = method.compress(atol=1e-3)
            res[name] = _evaluate(small, dense, variant, ev, cfg)
            res[name].update(
                expected_sparsity=method.expected_sparsity(),
                pruned_sparsity=method.pruned_sparsity(),
                train_s=time.perf_counter() - start,
            )
        matched = res.get("compresso", res.get("compresso-noprompt"))
        fraction = 1.0 - matched["layer_params"] / _layer_params(dense)
        for name in ("magnitude", "taylor", "wanda-sp", "random"):
            if name not in cfg["variants"]:
                continue
            start = time.perf_counter()
            masks, _ = budget_masks(dense, _scores(dense, name, calib, seed), fraction)
            # prune_structured's own shrink check uses atol 1e-5, which the tiny model's logits
            # exceed by float noise; the same pipeline with a looser check:
            pruned = shrink(dense, masks, atol=1e-3)
            model = _lora(pruned, seed)
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
            _train(model, None, data, "none", {**cfg, "_opt": opt}, seed)
            merged = merge_lora(model)
            res[name] = _evaluate(merged, dense, "none", ev, cfg)
            res[name]["train_s"] = time.perf_counter() - start
        out[str(target)] = res
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the reproduction; returns 0."""
    from sparsecore.evaluation import command_line, finish_reproduction, format_table
    from sparsecore.evaluation.protocol import over_seeds
    from sparsecore.evaluation.reproduction import run_seeds
    from sparsecore.evaluation.sparseland import inference_cost, sparseland_fields, training_cost

    args = parse_args(argv)
    start = time.perf_counter()
    cfg = _settings(args.quick)
    for key in ("seeds", "size", "jobs", "prompt", "targets"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    seeds = list(range(cfg["seeds"]))
    results = run_seeds(functools.partial(run_seed, cfg), seeds, jobs=min(cfg["jobs"], len(seeds)))
    rows, verdicts, summary = [], {}, {}
    for target in cfg["targets"]:
        t = str(target)
        dense_layer = (
            results[seeds[0]][t]["dense"]["layer_params"] if "dense" in cfg["variants"] else None
        )

        def mean(v: str, key: str, t: str = t) -> float:
            return statistics.fmean(results[s][t][v][key] for s in seeds)

        for v in cfg["variants"]:

            def run(seed: int, v: str = v, t: str = t, d: int = dense_layer) -> tuple[float, dict]:
                r = results[seed][t][v]
                sp = 1.0 - r["layer_params"] / d
                return r["perplexity"], {"sparsity": sp, "wall_s": r.get("train_s", 0.0)}

            row = over_seeds(f"{v}@{target}", seeds, run, metric="perplexity")
            row.note = (
                f"instr-acc {mean(v, 'instr_acc'):.3f}, mc-acc {mean(v, 'mc_acc'):.3f}, params "
                f"{mean(v, 'params') / 1e3:.1f}k, latency x{mean(v, 'latency_ratio'):.2f}"
            )
            rows.append(row)
            summary[f"{v}@{target}"] = {
                k: mean(v, k)
                for k in ("perplexity", "instr_acc", "mc_acc", "params", "layer_params",
                          "latency_ratio")
            }  # fmt: skip
        baselines = [v for v in ("magnitude", "taylor", "wanda-sp") if v in cfg["variants"]]
        best = min(mean(v, "perplexity") for v in baselines)
        verdicts[f"compresso_beats_oneshot_ppl@{target}"] = mean("compresso", "perplexity") < best
        best_acc = max(mean(v, "instr_acc") for v in baselines)
        verdicts[f"compresso_beats_oneshot_instr@{target}"] = (
            mean("compresso", "instr_acc") > best_acc
        )
        if "compresso-noprompt" in cfg["variants"]:
            verdicts[f"prompt_helps_instr@{target}"] = mean("compresso", "instr_acc") > mean(
                "compresso-noprompt", "instr_acc"
            )
    print(format_table(rows))
    claim_keys = [k for k in verdicts if k.startswith("compresso_beats")]
    holds = all(verdicts[k] for k in claim_keys)
    for k, v in verdicts.items():
        print(f"{k}: {'yes' if v else 'no'}")
    last = str(cfg["targets"][-1])
    comp = summary[f"compresso@{last}"]
    dense_s = summary[f"dense@{last}"]
    achieved = 1.0 - comp["layer_params"] / dense_s["layer_params"]
    steps = cfg["l0_steps"] + cfg["ft_steps"]
    fields = sparseland_fields(
        sparsity={
            "target": cfg["targets"][-1],
            "achieved": achieved,
            "param_set": {
                "included": ["attention heads (q/k/v/o)", "FFN channels", "hidden dimensions"],
                "excluded": ["embeddings and lm_head (shrunk with the hidden dims)", "norms"],
                "unit": "decoder-layer parameters removed",
                "numel": int(dense_s["layer_params"]),
            },
            "per_layer": {
                f"layer{i}": statistics.fmean(
                    results[s][last]["compresso"]["per_layer"][i] for s in seeds
                )
                for i in range(len(results[seeds[0]][last]["compresso"]["per_layer"]))
            },
        },
        training=training_cost(dense_train_flops=float(steps), epochs=None, tokens=steps),
        inference=inference_cost(
            1.0,
            comp["params"] / dense_s["params"],
            int(comp["params"]),
            int(dense_s["params"]),
            kernel="measured CPU latency, physically smaller dense model",
        ),
        allocation="learned",
        baselines=[f"dense@{last}", f"random@{last}", f"magnitude@{last}"],
    )
    claim = (
        "Compresso beats one-shot structured pruning + LoRA (magnitude, Taylor, Wanda-sp) at "
        "equal parameters and training data, on perplexity and the instruction task"
    )
    finish_reproduction(
        args.out, start=start, quick=args.quick,
        method="compresso", task=f"stdlib instruction data ({cfg['size']} Llama)",
        claim=claim, holds=holds, rows=rows, command=command_line(argv),
        settings={**cfg, "seeds": seeds, "quick": args.quick}, verdicts=verdicts,
        summary=summary, per_seed={str(s): results[s] for s in seeds},
        machine_note="shared 2-core CPU (timings contended)", sparseland=fields,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
