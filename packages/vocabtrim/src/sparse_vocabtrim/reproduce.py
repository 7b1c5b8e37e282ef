"""Reproduce the VocabTrim claim at CPU scale (reproduction contract, ARCHITECTURE.md §7).

Paper: Goel et al., "VocabTrim: Vocabulary Pruning for Efficient Speculative Decoding in
LLMs", arXiv 2506.22694.

Setting: the core's ``stdlib-lm`` text with a byte-level BPE of 4096 tokens
(`sparsecore.bench.lm_bpe`), so that the LM head is most of a small drafter, as it is for
Llama-3's 128K vocabulary. Target: the core's pretrained ``tiny`` Llama (hidden 128, 4 layers);
drafter: the pretrained ``mini`` Llama (hidden 64, 2 layers), same tokenizer, both from
`sparsecore.bench.pretrained` (weight seed 0). ``--quick``: BPE 1024, ``micro`` target and
``nano`` drafter.

Per seed (1, 2, 3; never the weight seed):

1. calibration: ``--calib-prompts`` prompts of the *training* text, ``--calib-tokens`` tokens
   sampled from the target (the paper's best source) at temperature 1;
2. ``k`` = each fraction of ``--fractions`` of ``V``: the drafter head trimmed to the top-k
   (`VocabTrim`); evaluation prompts from the held-out files, ``--new-tokens`` tokens each, at
   each draft length γ of ``--gammas`` with sampled decoding (T = 1), and at the middle γ
   with greedy decoding (T = 0) too;
3. metrics: block efficiency τ (per row, `SpeculativeOutput.block_efficiency`), drafter bytes
   per pass (`decode_bytes`), MBSU = τ / (1 + γ · drafter/target bytes), measured wall-clock
   decode seconds and tokens/s beside plain target decoding (one reference per mode and seed,
   same process and prompts), and the measured
   drafter step latency (median of interleaved repeats) of the trimmed vs untrimmed drafter;
4. ablations at the smallest ``k`` above 5% of V: the same k chosen by random ids (the
   Sparseland matched-random baseline), by head-row norm (a magnitude baseline), and by counts
   of drafter generations and of raw text (the paper's other calibration sources).

Claim tested (printed last): some trimmed drafter (k < V) has a higher MBSU than the untrimmed
drafter at every γ (sampled decoding, seed means) with a block-efficiency drop of at most 5%.

Timings were taken on a shared 2-core CPU (contended); MBSU is the paper's hardware-free metric.

Usage::

    python benchmarks/reproduce.py            # full: 3 seeds
    python benchmarks/reproduce.py --quick    # tiny settings, < 60 s
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from sparse_vocabtrim.calibration import calibration_tokens
from sparse_vocabtrim.method import VocabTrim
from sparse_vocabtrim.metrics import decode_bytes, memory_bound_speedup
from sparse_vocabtrim.speculative import (
    CausalLMRunner,
    autoregressive_generate,
    speculative_generate,
)
from sparse_vocabtrim.trim import token_counts, top_k_vocab, trim_drafter

CLAIM = (
    "a trimmed drafter (k < V) reaches a higher memory-bound speed-up than the untrimmed "
    "drafter at every draft length, with a block-efficiency drop of at most 5% (sampled, T=1)"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from sparsecore.evaluation.paths import default_results_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (< 60 s)")
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--fractions", type=float, nargs="*", default=None)
    parser.add_argument("--gammas", type=int, nargs="*", default=None)
    parser.add_argument("--prompts", type=int, default=None, help="evaluation prompts (batch)")
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--calib-prompts", type=int, default=None)
    parser.add_argument("--calib-tokens", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="seed worker processes")
    parser.add_argument("--out", default=str(default_results_path(__file__, argv)))
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "seeds": [1] if quick else [1, 2, 3],
        "fractions": [0.1, 1.0] if quick else [0.05, 0.1, 0.25, 0.5, 1.0],
        "gammas": [3] if quick else [2, 4, 6],
        "prompts": 8,
        "new_tokens": 24 if quick else 48,
        "calib_prompts": 16 if quick else 64,
        "calib_tokens": 32 if quick else 64,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def load_pair(quick: bool) -> tuple[Any, torch.nn.Module, torch.nn.Module]:
    """The BPE task and the pretrained (target, drafter) pair on it (cached after the first)."""
    from sparsecore.bench.lm_bpe import load_bpe_lm_task
    from sparsecore.bench.pretrained import pretrained_tiny_lm

    task = load_bpe_lm_task(1024, 64) if quick else load_bpe_lm_task(4096, 128)
    names = ("micro", "nano") if quick else ("tiny", "mini")
    target = pretrained_tiny_lm(names[0], task=task, progress=False)
    drafter = pretrained_tiny_lm(names[1], task=task, progress=False)
    return task, target, drafter


@torch.no_grad()
def drafter_step_seconds(
    models: dict[str, torch.nn.Module], prompt: torch.Tensor, repeats: int = 15, steps: int = 16
) -> dict[str, float]:
    """Median seconds of one KV-cached decode step per model, interleaved repeats."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            runner = CausalLMRunner(model)
            runner.forward(prompt, last_only=True)
            ids = prompt[:, -1:]
            start = time.perf_counter()
            for _ in range(steps):
                runner.forward(ids, last_only=True)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


def _kept_by(rule: str, k: int, drafter: torch.nn.Module, seed: int) -> torch.Tensor:
    vocab = drafter.lm_head.weight.shape[0]
    if rule == "random":
        gen = torch.Generator().manual_seed(10_000 + seed)
        return torch.sort(torch.randperm(vocab, generator=gen)[:k]).values
    norms = drafter.lm_head.weight.detach().norm(dim=1)
    return torch.sort(torch.sort(-norms, stable=True).indices[:k]).values


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One seed: calibration, every (k, γ, mode), ablations, latencies."""
    from tqdm.auto import tqdm

    from sparsecore.bench.lm import calibration_blocks

    task, target, drafter = load_pair(args.quick)
    vocab = task.vocab_size
    prompt_len = 16 if args.quick else 32
    calib_prompts = calibration_blocks(task, args.calib_prompts, seed=seed)[:, :prompt_len]
    order = torch.randperm(task.eval_blocks.shape[0], generator=torch.Generator().manual_seed(seed))
    prompts = task.eval_blocks[order[: args.prompts], :prompt_len]
    sources = {
        "target": calibration_tokens(
            "target", calib_prompts, target=target, max_new_tokens=args.calib_tokens, seed=seed
        )
    }
    target_bytes = decode_bytes(target)
    results: list[dict[str, Any]] = []

    # plain target decoding, the measured-latency reference, once per mode and seed
    base_seconds = {
        mode: autoregressive_generate(
            target, prompts, args.new_tokens, temp, torch.Generator().manual_seed(seed)
        )[1]
        for mode, temp in (("sampled", 1.0), ("greedy", 0.0))
    }
    greedy_gamma = args.gammas[len(args.gammas) // 2]

    def evaluate(label: str, small: torch.nn.Module, k: int, gammas: list[int]) -> None:
        nbytes = decode_bytes(small)
        for gamma in gammas:
            modes = [("sampled", 1.0)] + ([("greedy", 0.0)] if gamma == greedy_gamma else [])
            for mode, temp in modes:
                gen = torch.Generator().manual_seed(seed * 1000 + gamma)
                out = speculative_generate(
                    target, small, prompts, args.new_tokens, gamma, temp, gen
                )
                base_s = base_seconds[mode]
                tau = out.block_efficiency
                tokens = prompts.shape[0] * args.new_tokens
                results.append(
                    {
                        "variant": f"{label} γ={gamma} {mode}",
                        "label": label,
                        "k": k,
                        "fraction": k / vocab,
                        "gamma": gamma,
                        "mode": mode,
                        "tau": tau,
                        "tokens_per_target_call": out.tokens_per_target_call,
                        "acceptance": out.acceptance_rate,
                        "drafter_bytes": nbytes,
                        "target_bytes": target_bytes,
                        "mbsu": memory_bound_speedup(max(tau, 1.0), gamma, nbytes, target_bytes),
                        "seconds": out.seconds,
                        "tokens_per_s": tokens / out.seconds,
                        "target_only_seconds": base_s,
                        "measured_speedup": base_s / out.seconds,
                    }
                )

    fractions = sorted(args.fractions)
    for fraction in tqdm(fractions, desc=f"seed {seed}: k", leave=False):
        k = max(1, round(fraction * vocab))
        method = VocabTrim(keep=k).setup(drafter_copy := _copy(drafter))
        method.calibrate([sources["target"]])
        small = method.trimmed()
        del drafter_copy
        label = "untrimmed" if k == vocab else f"k={fraction:.0%}"
        evaluate(label, small if k < vocab else drafter, k, args.gammas)
    # ablations at the smallest fraction above 5%
    k_ab = max(1, round(min(f for f in fractions if f > 0.05) * vocab))
    gamma_ab = [args.gammas[len(args.gammas) // 2]]
    sources["drafter"] = calibration_tokens(
        "drafter", calib_prompts, drafter=drafter, max_new_tokens=args.calib_tokens, seed=seed
    )
    sources["text"] = calibration_blocks(task, args.calib_prompts, seed=seed)
    for source in ("drafter", "text"):
        method = VocabTrim(keep=k_ab).setup(_copy(drafter))
        method.calibrate([sources[source]])
        evaluate(f"calib={source} k={k_ab / vocab:.0%}", method.trimmed(), k_ab, gamma_ab)
    for rule in ("random", "row-norm"):
        kept = _kept_by(rule, k_ab, drafter, seed)
        evaluate(f"{rule} k={k_ab / vocab:.0%}", trim_drafter(drafter, kept), k_ab, gamma_ab)
    small = VocabTrim(keep=k_ab).setup(_copy(drafter))
    small.calibrate([sources["target"]])
    latency = drafter_step_seconds(
        {"untrimmed": drafter, "trimmed": small.trimmed(), "target": target}, prompts
    )
    counts = token_counts(sources["target"], vocab)
    held_out = task.eval_blocks[order[: args.prompts]]
    coverage = {
        f"{f:.0%}": float(
            torch.isin(held_out, top_k_vocab(counts, max(1, round(f * vocab)))).double().mean()
        )
        for f in fractions
    }
    return {
        "rows": results,
        "step_latency_s": latency,
        "k_ablation": k_ab,
        "calibration_coverage": coverage,
        "vocab": vocab,
    }


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(per_seed: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary per variant: mean ± std over seeds of every metric, per-seed MBSU."""
    seeds = list(per_seed)
    variants = [r["variant"] for r in per_seed[seeds[0]]["rows"]]
    out = []
    for variant in variants:
        rows = [next(r for r in per_seed[s]["rows"] if r["variant"] == variant) for s in seeds]
        first = rows[0]
        entry = {key: first[key] for key in ("variant", "label", "k", "fraction", "gamma", "mode")}
        entry["drafter_bytes"] = first["drafter_bytes"]
        entry["target_bytes"] = first["target_bytes"]
        for key in ("tau", "acceptance", "mbsu", "tokens_per_s", "measured_speedup",
                    "tokens_per_target_call"):  # fmt: skip
            mean, std = _mean_std([r[key] for r in rows])
            entry[key] = mean
            entry[f"{key}_std"] = std
        entry["mbsu_seeds"] = [r["mbsu"] for r in rows]
        entry["tau_seeds"] = [r["tau"] for r in rows]
        out.append(entry)
    return out


def check_claim(
    summary: list[dict[str, Any]], gammas: list[int], mode: str = "sampled"
) -> tuple[bool, list[str]]:
    """Per γ: the best trimmed k by MBSU among those within 5% of the untrimmed τ."""
    holds, lines = True, []
    for gamma in gammas:
        rows = [r for r in summary if r["gamma"] == gamma and r["mode"] == mode]
        if not any(r["label"] == "untrimmed" for r in rows):
            continue
        full = next(r for r in rows if r["label"] == "untrimmed")
        trimmed = [r for r in rows if r["label"].startswith("k=") and r["k"] < full["k"]]
        good = [r for r in trimmed if r["tau"] >= 0.95 * full["tau"]]
        best = max(good, key=lambda r: r["mbsu"], default=None)
        ok = best is not None and best["mbsu"] > full["mbsu"]
        holds &= ok
        if best is None:
            lines.append(f"{mode} γ={gamma}: no trimmed k keeps τ within 5% of {full['tau']:.3f}")
        else:
            lines.append(
                f"{mode} γ={gamma}: {best['label']} MBSU {best['mbsu']:.3f} vs untrimmed "
                f"{full['mbsu']:.3f} ({best['mbsu'] / full['mbsu'] - 1:+.1%}), τ {best['tau']:.3f}"
                f" vs {full['tau']:.3f} ({best['tau'] / full['tau'] - 1:+.1%})"
            )
    return holds, lines


def _sparseland(summary: list[dict[str, Any]], vocab: int, k_ab: int, args: argparse.Namespace,
                drafter_bytes_full: int) -> dict[str, Any]:  # fmt: skip
    from sparsecore.evaluation.sparseland import (
        disclose_sparsity,
        inference_cost,
        sparseland_fields,
        training_cost,
    )

    gamma = args.gammas[len(args.gammas) // 2]
    mask = torch.zeros(vocab, 1, dtype=torch.bool)
    mask[:k_ab] = True
    tokens = args.calib_prompts * args.calib_tokens
    frac = f"{k_ab / vocab:.0%}"
    small = next(r for r in summary if r["label"] == f"k={frac}" and r["gamma"] == gamma)
    fields = sparseland_fields(
        disclose_sparsity({"lm_head.weight (rows)": mask}, 1 - k_ab / vocab,
                          excluded=["every drafter tensor but the LM head", "the target model"]),
        training_cost(1.0, 0.0, tokens=tokens),
        inference_cost(drafter_bytes_full, small["drafter_bytes"], small["drafter_bytes"],
                       drafter_bytes_full, kernel="head row removal (dense k-row matmul)"),
        "not-applicable",
        [f"untrimmed γ={gamma} sampled", f"random k={frac} γ={gamma} sampled",
         f"row-norm k={frac} γ={gamma} sampled"],
    )  # fmt: skip
    fields["notes"] = (
        "training-free: R3 counts the calibration tokens generated by the target (no training); "
        "R4's MACs/params ratios are decode bytes of the drafter; the metric is MBSU"
    )
    return fields


def plot(summary: list[dict[str, Any]], gammas: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for gamma in gammas:
        rows = sorted(
            (r for r in summary if r["gamma"] == gamma and r["mode"] == "sampled"
             and (r["label"].startswith("k=") or r["label"] == "untrimmed")),
            key=lambda r: r["fraction"],
        )  # fmt: skip
        xs = [r["fraction"] for r in rows]
        axes[0].errorbar(xs, [r["mbsu"] for r in rows], [r["mbsu_std"] for r in rows],
                         marker="o", label=f"γ={gamma}")  # fmt: skip
        axes[1].errorbar(xs, [r["tau"] for r in rows], [r["tau_std"] for r in rows],
                         marker="o", label=f"γ={gamma}")  # fmt: skip
    for ax, name in zip(axes, ("memory-bound speed-up", "block efficiency τ"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("k / V (drafter head kept)")
        ax.set_ylabel(name)
        ax.legend()
    fig.suptitle("VocabTrim on tiny BPE Llamas (sampled, T=1)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the reproduction; print the table and the claim; write the results JSON."""
    from pathlib import Path

    from sparsecore.evaluation import Row, format_table, report_sparseland, write_results
    from sparsecore.evaluation.reproduction import command_line, run_seeds

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    load_pair(args.quick)  # build the cache once before the seeds
    from functools import partial

    per_seed = run_seeds(partial(run_seed, args=args), args.seeds, jobs=args.jobs)
    summary = summarise(per_seed)
    first = per_seed[args.seeds[0]]
    vocab = first["vocab"]
    full_bytes = next(r for r in summary if r["label"] == "untrimmed")["drafter_bytes"]
    rows = [
        Row(
            r["variant"], 1 - r["k"] / vocab, r["drafter_bytes"] / full_bytes, "MBSU",
            r["mbsu"], r["mbsu_std"], r["mbsu_seeds"],
            note=f"τ {r['tau']:.3f}±{r['tau_std']:.3f} acc {r['acceptance']:.3f} "
            f"tok/s {r['tokens_per_s']:.0f} measured ×{r['measured_speedup']:.2f}",
        )
        for r in summary
    ]  # fmt: skip
    holds, lines = check_claim(summary, args.gammas)
    # greedy decoding is reported beside the claim (it is not part of it)
    lines += [f"(not the claim) {line}" for line in check_claim(summary, args.gammas, "greedy")[1]]
    print(format_table(rows, note_width=90))
    latency = {
        name: statistics.fmean(per_seed[s]["step_latency_s"][name] for s in args.seeds)
        for name in first["step_latency_s"]
    }
    print(
        f"decode-step latency (median, batch {args.prompts}): untrimmed drafter "
        f"{1e3 * latency['untrimmed']:.2f} ms, trimmed (k={first['k_ablation']}) "
        f"{1e3 * latency['trimmed']:.2f} ms, target {1e3 * latency['target']:.2f} ms"
    )
    for line in lines:
        print(line)
    print(f"claim: {CLAIM}: {'HOLDS' if holds else 'DOES NOT HOLD'}")
    out = Path(args.out)
    data = write_results(
        out,
        "vocabtrim",
        "stdlib-lm-bpe" + ("1024 (quick)" if args.quick else "4096"),
        CLAIM,
        holds,
        rows,
        command_line(argv),
        settings={k: v for k, v in vars(args).items() if k != "out"},
        summary=summary,
        claim_lines=lines,
        step_latency_s=latency,
        calibration_coverage={s: per_seed[s]["calibration_coverage"] for s in args.seeds},
        mbsu_formula="MBSU = tau / (1 + gamma * drafter_bytes / target_bytes)",
        timing_note="wall-clock numbers from a shared 2-core CPU; MBSU is hardware-free",
        seconds=time.perf_counter() - start,
        sparseland=_sparseland(summary, vocab, first["k_ablation"], args, full_bytes),
    )
    plot(summary, args.gammas, str(out.with_suffix(".png")))
    report_sparseland(data, quick=args.quick)
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
