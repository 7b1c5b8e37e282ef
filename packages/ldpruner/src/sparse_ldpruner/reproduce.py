"""LD-Pruner's claim at CPU scale: a digits LDM pruned to ~65% of its UNet MACs.

Setting: the cached `pretrained_tiny_ldm` (``tiny``: a diffusers ``UNet2DConditionModel`` with
ResNet blocks, self-/cross-attention and GEGLU FFNs on a 2×8×8 ``AutoencoderKL`` latent of
16×16 sklearn digits, class-conditional). Every pruned variant is brought to the same MAC budget
(``MAC_RATIO`` of the UNet's MACs) and fine-tuned with the same diffusion-loss budget.

Variants: ``dense`` (the original), ``dense+ft`` (the same fine-tuning, unpruned), ``ldpruner``
(latent score, ascending, remove/halve), ``random`` (the same candidates in random order to the
same budget: the matched-random baseline), ``magnitude`` (uniform L2 channel/head pruning to the
same budget), and two ablations: ``ldpruner-mean-only`` (the score without its std term) and
``ldpruner-reinit`` (LD-Pruner's architecture with re-initialised weights: no weight
preservation). Each pruned variant is evaluated before (``@0``) and after fine-tuning.

Metrics: FID (torchmetrics, 64-d features of a digits CNN, against the held-out real digits),
accuracy of the generated digits under that CNN, measured sampling latency (DDIM, interleaved
medians), UNet MACs and parameters. Seeds vary the score's noise seeds, the random order and the
fine-tuning data order; the pretrained model is one (weight seed 0) for all seeds.

Claim (paper: "34.9% less inference time with 5.2% better FID" on SD): LD-Pruner's fine-tuned
model (a) samples at most 0.85× the dense latency, (b) has FID within 25% of the dense model's,
and (c) FID no worse than random and magnitude at the same MACs and fine-tuning.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from typing import Any

import torch

from sparse_ldpruner.cost import count_parameters, interleaved_latency, unet_macs
from sparse_ldpruner.pretrained import pretrained_tiny_ldm, train_unet
from sparse_ldpruner.pruning import ld_prune, magnitude_prune, random_prune
from sparse_ldpruner.quality import fid_and_accuracy

MAC_RATIO = 0.65
FULL = dict(model="tiny", seeds=[0, 1, 2], n_samples=32, steps=10, ft_steps=60, n_eval=250,
            lat_batch=32, lat_repeats=3, ablations=True)  # fmt: skip
QUICK = dict(model="micro", seeds=[0], n_samples=16, steps=4, ft_steps=5, n_eval=60,
             lat_batch=16, lat_repeats=2, ablations=False)  # fmt: skip


def _mean_only(ldm, cands, labels, noise, steps, keep_ratio):
    """Ablation: ‖Δmean‖ only (the std term of the score removed)."""
    from sparse_ldpruner.operators import apply_candidates

    ref = ldm.sample_latents(labels, noise, steps).flatten(1)
    out = {}
    for c in cands:
        model = copy.deepcopy(ldm)
        apply_candidates(model.unet, [c], keep_ratio)
        lat = model.sample_latents(labels, noise, steps).flatten(1)
        out[c.label] = float((ref.mean(0) - lat.mean(0)).norm())
    return out


def _reinit(ldm, seed: int):
    model = copy.deepcopy(ldm)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.unet.modules():
            if hasattr(module, "reset_parameters") and module is not model.unet:
                module.reset_parameters()
    return model


def run_seed(seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """One seed of every variant: ``{variant: {fid, acc, macs, params, wall_s}}`` + latency."""
    torch.set_num_threads(1)
    bundle = pretrained_tiny_ldm(cfg["model"], seed=0, progress=False)
    ldm, clf, data = bundle.ldm, bundle.classifier, bundle.data
    with torch.no_grad():
        latents = ldm.encode(data["train_x"])
    n = cfg["n_eval"]
    eval_labels = torch.arange(n) % 10
    eval_noise = ldm.initial_noise(n, 10_000 + seed)  # never the score's seeds
    score_seed, order_seed, ft_seed = 100 + seed, 200 + seed, 300 + seed

    def evaluate(model) -> dict[str, float]:
        images = model.generate(eval_labels, eval_noise, cfg["steps"])
        fid, acc = fid_and_accuracy(clf, data["test_x"], images, eval_labels)
        return {"fid": fid, "acc": acc, "macs": unet_macs(model),
                "params": count_parameters(model.unet)}  # fmt: skip

    def finetune(model) -> None:
        train_unet(model, latents, data["train_y"], cfg["ft_steps"], 64, 1e-3, ft_seed)

    out: dict[str, Any] = {}
    models: dict[str, Any] = {}
    start = time.perf_counter()
    out["dense"] = {**evaluate(ldm), "wall_s": 0.0}
    models["dense"] = ldm
    t = time.perf_counter()
    dense_ft = copy.deepcopy(ldm)
    finetune(dense_ft)
    out["dense+ft"] = {**evaluate(dense_ft), "wall_s": time.perf_counter() - t}
    pruners = {
        "ldpruner": lambda: ld_prune(
            ldm, MAC_RATIO, cfg["n_samples"], cfg["steps"], seed=score_seed
        ),
        "random": lambda: random_prune(ldm, MAC_RATIO, seed=order_seed),
        "magnitude": lambda: magnitude_prune(ldm, MAC_RATIO),
    }
    if cfg["ablations"]:
        pruners["ldpruner-mean-only"] = lambda: ld_prune(
            ldm, MAC_RATIO, cfg["n_samples"], cfg["steps"], seed=score_seed, score_fn=_mean_only
        )
    chosen: dict[str, list[str]] = {}
    for name, prune in pruners.items():
        t = time.perf_counter()
        result = prune()
        chosen[name] = result.chosen
        out[f"{name}@0"] = {**evaluate(result.ldm), "wall_s": time.perf_counter() - t}
        finetune(result.ldm)
        out[name] = {**evaluate(result.ldm), "wall_s": time.perf_counter() - t}
        models[name] = result.ldm
        if name == "ldpruner" and cfg["ablations"]:
            t = time.perf_counter()
            re = _reinit(result.ldm, ft_seed + 1)
            finetune(re)
            out["ldpruner-reinit"] = {**evaluate(re), "wall_s": time.perf_counter() - t}
    lat_names = ["dense", "ldpruner", "random", "magnitude"]
    lat_labels = torch.arange(cfg["lat_batch"]) % 10
    lat_noise = ldm.initial_noise(cfg["lat_batch"], 20_000 + seed)
    medians = interleaved_latency(
        [lambda m=models[k]: m.generate(lat_labels, lat_noise, cfg["steps"]) for k in lat_names],
        repeats=cfg["lat_repeats"],
    )
    latency = dict(zip(lat_names, medians, strict=True))
    return {"variants": out, "latency_s": latency, "chosen": chosen,
            "total_s": time.perf_counter() - start, "pretrained": bundle.meta}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; print the table and the claim line; write the results JSON."""
    from sparsecore.evaluation import Row, format_table, write_results
    from sparsecore.evaluation.paths import default_results_path
    from sparsecore.evaluation.reproduction import command_line, report_sparseland, run_seeds
    from sparsecore.evaluation.sparseland import inference_cost, sparseland_fields, training_cost

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings, same code path")
    parser.add_argument("--out", default=default_results_path(__file__, argv))
    parser.add_argument("--jobs", type=int, default=1, help="seeds in parallel processes")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = QUICK if args.quick else FULL
    start = time.perf_counter()
    from functools import partial

    per_seed = run_seeds(partial(run_seed, cfg=cfg), cfg["seeds"], jobs=args.jobs)
    results = [per_seed[s] for s in cfg["seeds"]]
    variants = list(results[0]["variants"])
    dense = results[0]["variants"]["dense"]
    rows = []
    for v in variants:
        rs = [r["variants"][v] for r in results]
        fids = [r["fid"] for r in rs]
        base = v.split("@")[0]
        lat = [r["latency_s"][base] / r["latency_s"]["dense"] for r in results
               if base in r["latency_s"]]  # fmt: skip
        note = (f"acc {statistics.fmean(r['acc'] for r in rs):.3f}, "
                f"params {statistics.fmean(r['params'] for r in rs):.0f}")  # fmt: skip
        if lat:
            note += f", latency x{statistics.fmean(lat):.3f}"
        rows.append(Row(
            variant=v,
            sparsity=1 - statistics.fmean(r["params"] for r in rs) / dense["params"],
            flops_ratio=statistics.fmean(r["macs"] for r in rs) / dense["macs"],
            metric="fid", mean=statistics.fmean(fids),
            std=statistics.stdev(fids) if len(fids) > 1 else 0.0,
            seeds=fids, wall_s=statistics.fmean(r["wall_s"] for r in rs), note=note,
        ))  # fmt: skip
    print(format_table(rows))
    mean = {r.variant: r.mean for r in rows}
    lat_ratio = statistics.fmean(r["latency_s"]["ldpruner"] / r["latency_s"]["dense"]
                                 for r in results)  # fmt: skip
    checks = {
        "latency_at_most_0.85x_dense": lat_ratio <= 0.85,
        "fid_within_25pct_of_dense": mean["ldpruner"] <= 1.25 * mean["dense"],
        "fid_le_random": mean["ldpruner"] <= mean["random"],
        "fid_le_magnitude": mean["ldpruner"] <= mean["magnitude"],
    }
    holds = all(checks.values())
    for k, ok in checks.items():
        print(f"{k}: {ok}")
    claim = (
        f"at {MAC_RATIO:.0%} of the UNet MACs and the same fine-tuning, LD-Pruner samples "
        "at <= 0.85x the dense latency with FID within 25% of the dense model's and no "
        "worse than random operator removal and uniform magnitude channel pruning"
    )
    first = results[0]["variants"]
    ld = first["ldpruner"]
    ft_macs = 3.0 * ld["macs"] * 64 * cfg["ft_steps"]
    pre = results[0]["pretrained"]
    dense_train = 3.0 * dense["macs"] * 64 * (pre["train"]["unet_steps"] + cfg["ft_steps"])
    entry = sparseland_fields(
        sparsity={
            "target": None,
            "achieved": 1 - ld["params"] / dense["params"],
            "param_set": {
                "included": ["unet (all parameters)"],
                "excluded": ["autoencoder", "class embedding"],
                "numel": dense["params"],
                "unit": "UNet parameters (first seed)",
            },
            "per_layer": {"unet": 1 - ld["params"] / dense["params"]},
        },
        training=training_cost(
            dense_train_flops=dense_train,
            train_flops=3.0 * dense["macs"] * 64 * pre["train"]["unet_steps"] + ft_macs,
            epochs=64 * (pre["train"]["unet_steps"] + cfg["ft_steps"]) / len(bundle_labels(cfg)),
        ),
        inference=inference_cost(
            dense["macs"],
            ld["macs"],
            ld["params"],
            dense["params"],
            kernel="physically smaller UNet, sampling latency measured",
        ),
        allocation="global",
        baselines=["dense", "random", "magnitude"],
    )
    entry["gaps"] = []
    entry["notes"] = (
        "MACs of one UNet forward on one latent; the score's sampling runs "
        "(n_samples x candidates x steps forwards) are not in the training FLOPs"
    )
    data = write_results(
        args.out, "ldpruner", f"digits-ldm-{cfg['model']}", claim, holds, rows,
        command_line(argv),
        settings={**cfg, "mac_ratio": MAC_RATIO}, checks=checks, latency_ratio=lat_ratio,
        per_seed={s: {k: v for k, v in per_seed[s].items() if k != "pretrained"}
                  for s in cfg["seeds"]},
        pretrained=results[0]["pretrained"], total_wall_s=time.perf_counter() - start,
        sparseland=entry,
    )  # fmt: skip
    report_sparseland(data, quick=args.quick)
    print(f"claim: {'holds' if holds else 'does not hold'}: {claim}")
    return 0


def bundle_labels(cfg: dict[str, Any]) -> torch.Tensor:
    """Training labels of the digits split (its size sets the epoch count)."""
    from sparse_ldpruner.quality import load_digits_16

    return load_digits_16()["train_y"]


if __name__ == "__main__":
    sys.exit(main())
