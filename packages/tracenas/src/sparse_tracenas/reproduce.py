"""Reproduce TraceNAS's proxy–performance check and its pruned model vs uniform pruning.

Setting (scaled from the paper, arXiv 2602.02891): the core's pretrained ``tiny`` Llama
(`sparsecore.bench.pretrained_tiny_lm`, 4 layers, hidden 128, 4 heads, FFN 384, byte-level
``stdlib-lm``), 8 calibration blocks of 128 tokens, target sparsity 0.25 of the decoder-layer
projection weights ± 0.03, population 8, 5 generations, 15 steps of continued pre-training
(batch 8), perplexity on 32 held-out blocks [scaled down from the official 16 samples and 10
generations to fit a shared 2-core machine]. Per seed (the seed draws the
calibration blocks, the search and the continued-pre-training batches; the model is fixed):

1. **Search**: `TraceNAS.calibrate` (base traces, importance-guided initial population, the
   official evolutionary operators, ranking by Φ); its wall time.
2. **Proxy–performance check** (the paper's Figure "proxy vs performance" on 70 models): the
   best candidate and 29 others drawn at random from the search history are removed physically
   (`sparsecore.structures.shrink`), continued-pre-trained for the same steps
   (`sparsecore.bench.pretrained.pretrain_lm`) and scored by validation perplexity. Spearman ρ
   between each proxy and ``-perplexity`` (higher is better): Φ (Pearson, the paper), its
   cosine and dot-product variants, and simpler proxies: kept parameters and the kept groups'
   summed magnitude, Wanda-sp and first-order Taylor importance
   (`sparsecore.structures.importance.group_importance`).
3. **Comparison at the same budget**: the best candidate vs uniform width pruning (the core's
   `sparsecore.structures.importance.prune_structured`: the same head and FFN-channel counts
   removed in every layer to meet ``sparsity``, by Wanda-sp, first-order Taylor (LLM-Pruner)
   or magnitude), uniform
   depth pruning (the ``round(sparsity · L)`` layers of lowest official layer importance), and a
   matched random sub-network (the best candidate's active layers and per-layer counts, random
   groups; Sparseland R5), all after the same continued pre-training.

Claims (reported as measured, never tuned): (A) Φ's mean Spearman ρ exceeds every simpler
proxy's; (B) the best candidate's perplexity after continued pre-training is below uniform
width (Wanda) and uniform depth pruning's.

``--quick``: the ``micro`` model, one seed, 6 candidates, a 2-generation search, 8 CPT steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

SETTINGS: dict[str, dict[str, Any]] = {
    "full": dict(size="tiny", seeds=(0, 1, 2), calib=8, candidates=30, cpt_steps=15,
                 cpt_batch=8, cpt_lr=1e-3, eval_blocks=32, sparsity=0.25, window=0.03,
                 population=8, iterations=5, mlp_block=32),
    "quick": dict(size="micro", seeds=(0,), calib=8, candidates=6, cpt_steps=8, cpt_batch=8,
                  cpt_lr=1e-3, eval_blocks=16, sparsity=0.25, window=0.1, population=4,
                  iterations=2, mlp_block=16),
}  # fmt: skip
PROXY_NAMES = (
    "phi (pearson)", "phi cosine", "phi dot", "params", "magnitude", "wanda", "taylor",
)  # fmt: skip
SIMPLE = ("params", "magnitude", "wanda", "taylor")
BASELINES = {
    "dense": "dense (no pruning)",
    "matched_random": "random (matched counts)",
    "magnitude": "uniform width (magnitude)",
}
METRIC = "val perplexity (lower is better)"
#: Tolerance of shrink's logit check: the pretrained model's logits reach ~20, where float32
#: summation order alone moves them by ~1e-5.
SHRINK_ATOL = 1e-3
CLAIM = (
    "Φ ranks candidates by post-CPT perplexity better (mean Spearman) than parameter count, "
    "magnitude, Wanda-sp and Taylor sums (A); the best-Φ model beats uniform width (Wanda-sp, "
    "Taylor) and uniform depth pruning at the same budget after the same continued "
    "pre-training (B)"
)


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    value = spearmanr(x, y).statistic
    return float(value) if value == value else 0.0  # constant input: no ranking


def _depth_masks(space, base, count: int) -> dict:
    score = [a + m for a, m in zip(base.importance["attn"], base.importance["mlp"], strict=True)]
    drop = sorted(range(space.num_layers), key=lambda i: score[i])[:count]
    return {
        "heads": [torch.ones(space.kv_groups, dtype=torch.bool)] * space.num_layers,
        "ffn": [torch.ones(space.intermediate, dtype=torch.bool)] * space.num_layers,
        "layers": torch.tensor([i not in drop for i in range(space.num_layers)]),
    }


def _random_masks(masks: dict, generator: torch.Generator) -> dict:
    def shuffle(m: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(m)
        out[torch.randperm(m.numel(), generator=generator)[: int(m.sum())]] = True
        return out

    return {
        "heads": [shuffle(m) for m in masks["heads"]],
        "ffn": [shuffle(m) for m in masks["ffn"]],
        "layers": masks["layers"].clone(),
    }


def _kept_score(masks: dict, heads: list[torch.Tensor], ffn: list[torch.Tensor]) -> float:
    total = 0.0
    for i, on in enumerate(masks["layers"].tolist()):
        if on:
            total += float(heads[i][masks["heads"][i]].sum() + ffn[i][masks["ffn"][i]].sum())
    return total


def run_seed(seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """One seed: search, proxy–performance check, comparison rows (module docstring)."""
    from tqdm.auto import tqdm

    from sparse_tracenas import TraceNAS, group_masks_of
    from sparse_tracenas.traces import candidate_traces, correlation
    from sparsecore.bench.lm import calibration_blocks, load_lm_task, perplexity
    from sparsecore.bench.pretrained import LM_SIZES, pretrain_lm, pretrained_tiny_lm
    from sparsecore.structures import shrink
    from sparsecore.structures.importance import (
        budget_masks,
        collect_gradients,
        collect_input_norms,
        group_importance,
    )

    task = load_lm_task(seq_len=LM_SIZES[cfg["size"]]["seq_len"])
    dense = pretrained_tiny_lm(cfg["size"], task=task, progress=False)
    calib = calibration_blocks(task, cfg["calib"], seed=1000 + seed)
    model = copy.deepcopy(dense)
    method = TraceNAS(
        sparsity=cfg["sparsity"], window=cfg["window"], population=cfg["population"],
        iterations=cfg["iterations"], mlp_block=cfg["mlp_block"], seed=seed,
    ).setup(model)  # fmt: skip
    method.calibrate([calib])
    result = method.result
    space, base = result.space, result.base
    batches = [calib[i : i + 4] for i in range(0, len(calib), 4)]
    magnitude = {k: group_importance(dense, k, "magnitude") for k in ("heads", "ffn")}
    grads = collect_gradients(dense, batches)
    taylor = {k: group_importance(dense, k, "taylor", gradients=grads) for k in ("heads", "ffn")}

    def evaluate(masks: dict, cpt_seed: int) -> tuple[float, float, int]:
        small = shrink(dense, masks, atol=SHRINK_ATOL)
        before = perplexity(small, task, max_blocks=cfg["eval_blocks"])
        pretrain_lm(small, task, cfg["cpt_steps"], cfg["cpt_batch"], cfg["cpt_lr"],
                    cpt_seed, progress=False)  # fmt: skip
        after = perplexity(small, task, max_blocks=cfg["eval_blocks"])
        params = sum(p.numel() for p in small.parameters())
        return before, after, params

    rng = random.Random(10_000 + seed)
    others = [s for s in result.history if s is not result.best]
    chosen = [result.best, *rng.sample(others, min(len(others), cfg["candidates"] - 1))]
    cpt_seed = 2000 + seed
    records = []
    for scored in tqdm(chosen, desc=f"candidates (seed {seed})", leave=False):
        c = scored.candidate
        masks = group_masks_of(c, space, base)
        before, after, params = evaluate(masks, cpt_seed)
        records.append({
            "candidate": [list(c.layers), list(c.attn), list(c.mlp)],
            "sparsity": scored.sparsity, "generation": scored.generation,
            "ppl_oneshot": before, "ppl_cpt": after, "params": params,
            "phi (pearson)": scored.phi,
            **{f"phi {k}": sum(correlation(t, base.traces[key], k) for key, t in
                               candidate_traces(dense, c, space, base, batches).items())
               for k in ("cosine", "dot")},
            "magnitude": _kept_score(masks, magnitude["heads"], magnitude["ffn"]),
            "wanda": _kept_score(masks, base.group_scores, base.channel_scores),
            "taylor": _kept_score(masks, taylor["heads"], taylor["ffn"]),
        })  # fmt: skip
    for r in records:
        r["params_proxy"] = space.params(candidate_of(r))
    target = [-r["ppl_cpt"] for r in records]
    target0 = [-r["ppl_oneshot"] for r in records]
    corr, corr0 = {}, {}
    for name in PROXY_NAMES:
        values = [r["params_proxy"] if name == "params" else r[name] for r in records]
        corr[name] = _spearman(values, target)
        corr0[name] = _spearman(values, target0)
    best_masks = group_masks_of(result.best.candidate, space, base)
    gen = torch.Generator().manual_seed(3000 + seed)

    def uniform(criterion: str) -> dict:
        """Uniform width at the target: `group_importance` + `budget_masks`.

        That is `prune_structured` without its own `shrink`, whose check keeps the strict
        default tolerance (see `SHRINK_ATOL`).
        """
        stats: dict[str, Any] = {}
        if criterion == "taylor":
            stats["gradients"] = grads
        elif criterion == "wanda":
            stats["input_norms"] = collect_input_norms(dense, batches)
        scores = {k: group_importance(dense, k, criterion, **stats) for k in ("heads", "ffn")}
        return budget_masks(dense, scores, cfg["sparsity"])[0]

    at_budget = [h for h in result.history if h.sparsity >= cfg["sparsity"] - 1e-9]
    variants = {
        "tracenas (best Φ)": best_masks,
        BASELINES["matched_random"]: _random_masks(best_masks, gen),
        "tracenas (best Φ, sparsity >= target)": group_masks_of(
            max(at_budget, key=lambda h: h.phi).candidate, space, base
        )
        if at_budget
        else best_masks,
        "uniform width (wanda)": uniform("wanda"),
        "uniform width (taylor)": uniform("taylor"),
        BASELINES["magnitude"]: uniform("magnitude"),
        "uniform depth (layer importance)": _depth_masks(
            space, base, max(1, round(cfg["sparsity"] * space.num_layers))
        ),
    }
    dense_params = sum(p.numel() for p in dense.parameters())
    rows: dict[str, dict[str, float]] = {
        BASELINES["dense"]: {
            "ppl": perplexity(dense, task, max_blocks=cfg["eval_blocks"]),
            "sparsity": 0.0,
            "params": dense_params,
        }
    }
    full_masks = group_masks_of(space.full(), space, base)
    before, after, params = evaluate(full_masks, cpt_seed)
    rows["dense + same CPT"] = {"ppl": after, "ppl_oneshot": before, "params": params,
                                "sparsity": 0.0}  # fmt: skip
    for name, masks in variants.items():
        if name == "tracenas (best Φ)":
            before, after, params = (
                records[0]["ppl_oneshot"],
                records[0]["ppl_cpt"],
                records[0]["params"],
            )
        else:
            before, after, params = evaluate(masks, cpt_seed)
        kept = sum(
            p.numel()
            for n, p in shrink(dense, masks, atol=SHRINK_ATOL).named_parameters()
            if "layers." in n and n.endswith("proj.weight")
        )
        rows[name] = {"ppl": after, "ppl_oneshot": before, "params": params,
                      "sparsity": 1.0 - kept / space.total_params}  # fmt: skip
    out = {
        "seed": seed, "search_s": result.seconds, "scored": len(result.history),
        "skipped": result.skipped, "best": records[0]["candidate"],
        "best_sparsity": result.best.sparsity, "correlations": corr,
        "correlations_oneshot": corr0, "rows": rows, "records": records,
    }  # fmt: skip
    if cfg.get("partial_dir"):  # each finished seed on disk, in case the run is cut short
        folder = Path(cfg["partial_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"seed{seed}.json").write_text(json.dumps(out, indent=1, default=str))
    return out


def candidate_of(record: dict[str, Any]):
    """The `Candidate` of a record's ``[layers, attn, mlp]``."""
    from sparse_tracenas import Candidate

    layers, attn, mlp = record["candidate"]
    return Candidate(tuple(layers), tuple(attn), tuple(mlp))


def _sparseland(cfg: dict[str, Any], seed_result: dict[str, Any]) -> dict[str, Any]:
    from sparse_tracenas import group_masks_of  # noqa: F401 (documented dependency)
    from sparsecore.bench.lm import load_lm_task
    from sparsecore.bench.pretrained import LM_SIZES, pretrained_tiny_lm
    from sparsecore.evaluation import sparseland_entry
    from sparsecore.structures import shrink

    task = load_lm_task(seq_len=LM_SIZES[cfg["size"]]["seq_len"])
    dense = pretrained_tiny_lm(cfg["size"], task=task, progress=False)
    c = candidate_of({"candidate": seed_result["best"]})
    method_masks = _masks_for(dense, c, cfg, seed_result["seed"])
    small = shrink(dense, method_masks, atol=SHRINK_ATOL)
    tokens = cfg["cpt_steps"] * cfg["cpt_batch"] * task.seq_len
    return sparseland_entry(
        small, {"input_ids": task.eval_blocks[:1]}, target=cfg["sparsity"], allocation="learned",
        train_examples=cfg["cpt_steps"] * cfg["cpt_batch"], tokens=tokens, dense_model=dense,
        baselines=BASELINES,
        notes="structure removed physically; the pruned set is the decoder-layer projections "
        "(embeddings, norms and the LM head are never pruned)",
    )  # fmt: skip


def _masks_for(dense, candidate, cfg: dict[str, Any], seed: int) -> dict:
    from sparse_tracenas import SearchSpace, collect_base, group_masks_of
    from sparsecore.bench.lm import calibration_blocks, load_lm_task
    from sparsecore.bench.pretrained import LM_SIZES

    task = load_lm_task(seq_len=LM_SIZES[cfg["size"]]["seq_len"])
    calib = calibration_blocks(task, cfg["calib"], seed=1000 + seed)
    space = SearchSpace.from_model(dense, cfg["sparsity"], cfg["window"],
                                   mlp_block=cfg["mlp_block"])  # fmt: skip
    base = collect_base(dense, [calib[i : i + 4] for i in range(0, len(calib), 4)])
    return group_masks_of(candidate, space, base)


def main(argv: list[str] | None = None) -> int:
    """Run the reproduction; ``--quick`` for the smoke-sized run."""
    from sparsecore.evaluation import Row, format_table, write_results
    from sparsecore.evaluation.paths import default_results_path
    from sparsecore.evaluation.reproduction import command_line, report_sparseland, run_seeds

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="micro model, one seed")
    parser.add_argument("--out", default=default_results_path(__file__, argv))
    parser.add_argument("--jobs", type=int, default=1, help="seeds in parallel processes")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = dict(SETTINGS["quick" if args.quick else "full"])
    if not args.quick:
        import tempfile

        cfg["partial_dir"] = str(Path(tempfile.gettempdir()) / "sparse-tracenas-seeds")
    if args.seeds:
        cfg["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    started = time.perf_counter()
    import functools

    results = run_seeds(functools.partial(run_seed, cfg=cfg), cfg["seeds"], jobs=args.jobs)
    per_seed = [results[s] for s in cfg["seeds"]]
    names = list(per_seed[0]["rows"])
    rows = []
    for name in names:
        values = [r["rows"][name]["ppl"] for r in per_seed]
        sp = statistics.fmean(r["rows"][name]["sparsity"] for r in per_seed)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        params = statistics.fmean(r["rows"][name]["params"] for r in per_seed)
        rows.append(Row(name, sp, float("nan"), METRIC, statistics.fmean(values), std, values,
                        0.0, f"{params:,.0f} parameters"))  # fmt: skip
    corr = {n: [r["correlations"][n] for r in per_seed] for n in PROXY_NAMES}
    corr0 = {n: [r["correlations_oneshot"][n] for r in per_seed] for n in PROXY_NAMES}
    mean_corr = {n: statistics.fmean(v) for n, v in corr.items()}
    holds_a = all(mean_corr["phi (pearson)"] > mean_corr[n] for n in SIMPLE)
    means = {r.variant: r.mean for r in rows}
    holds_b = means["tracenas (best Φ)"] < min(
        means["uniform width (wanda)"],
        means["uniform width (taylor)"],
        means["uniform depth (layer importance)"],
    )
    print(format_table(rows))
    print("Spearman ρ(proxy, -perplexity after CPT) per seed:")
    for n in PROXY_NAMES:
        print(f"  {n:14s} {mean_corr[n]:+.3f}  {[round(v, 3) for v in corr[n]]}"
              f"  (one-shot: {statistics.fmean(corr0[n]):+.3f})")  # fmt: skip
    search_s = [r["search_s"] for r in per_seed]
    print(f"search wall time per seed: {[round(s, 1) for s in search_s]} s "
          f"({per_seed[0]['scored']} candidates scored)")  # fmt: skip
    print(f"claim A (correlation): {'holds' if holds_a else 'does not hold'}")
    print(f"claim B (best vs uniform): {'holds' if holds_b else 'does not hold'}")
    entry = _sparseland(cfg, per_seed[0])
    data = write_results(
        args.out, "tracenas", f"{cfg['size']} Llama, stdlib-lm (byte-level Python source)",
        CLAIM, holds_a and holds_b, rows, command_line(argv), settings=cfg,
        claim_a_correlation_holds=holds_a, claim_b_comparison_holds=holds_b,
        spearman=corr, spearman_mean=mean_corr, spearman_oneshot=corr0,
        search_seconds=search_s, per_seed=[{k: v for k, v in r.items()} for r in per_seed],
        total_wall_s=time.perf_counter() - started, sparseland=entry,
        machine="shared 2-core CPU machine (timings contended)",
    )  # fmt: skip
    report_sparseland(json.loads(Path(args.out).read_text()), quick=args.quick)
    del data
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
