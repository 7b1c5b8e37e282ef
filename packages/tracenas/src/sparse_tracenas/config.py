"""TraceNAS options (`TraceNASConfig`), with the official defaults and where they come from.

Official values are from github.com/pmaletti/TraceNAS: ``scripts/run_search.sh`` (Llama-2-7B:
parameter window 2.6e9–3.0e9, ``min_num_layers`` 27 of 32, ``max_num_iters`` 10, 16 calibration
samples at batch 4) and ``tracenas_utils/scoring_funcs.py`` (``_generate_evolutionary_candidate``:
crossover probability 0.7, mutation probability 0.2, mutation strength 0.3, largest per-layer
pruning 0.72, 32-channel MLP blocks, parent 1 = the best elite with probability 0.4;
``pruning_ratio_calculator``: depth protection 0.15). Values scaled to the tiny models here are
marked [scaled]; values the code does not fix are marked [choice].
"""

from __future__ import annotations

from dataclasses import dataclass

from sparsecore import MethodConfig
from sparsecore.validation import check_choice, check_int, check_number

__all__ = ["PROXIES", "TraceNASConfig"]

#: Proxy variants: the paper's Pearson correlation and the official cosine / dot-product ones.
PROXIES = ("pearson", "cosine", "dot")


@dataclass(frozen=True)
class TraceNASConfig(MethodConfig):
    """TraceNAS search options.

    Attributes:
        sparsity: Target fraction of the decoder-layer projection weights removed (heads, FFN
            channels and whole layers together); the search keeps candidates within
            ``window`` of it. Default 0.25 [scaled; Llama-2-7B → ~2.8B removes ~0.6].
        window: Half-width of the parameter window, as a fraction of the decoder-layer
            weights: candidates with ``|sparsity(c) - sparsity| > window`` are skipped, as the
            official ``number_of_params_thresh`` skips models outside 2.6e9–3.0e9 (±0.03 of
            Llama-2-7B's 6.7e9) [scaled].
        proxy: ``"pearson"`` (the paper's Φ), ``"cosine"`` or ``"dot"`` (official variants).
        population: Candidates scored per generation (the initial one included) [choice].
        iterations: Evolutionary generations after the initial population (official 10).
        elites: Best unique candidates kept as parents [choice].
        crossover_prob: Probability of a two-parent child (official 0.7).
        mutation_prob: Per-sublayer probability of a width mutation (official 0.2).
        mutation_strength: Standard deviation of the multiplicative mutation ``N(1, σ)``
            (official 0.3).
        depth_mutation: Per-layer probability of flipping a layer on/off in the mutable
            segment [choice: the official ``mutate_layer`` takes it as an argument].
        max_layer_pruning: Largest fraction of one sublayer's width removed (official 0.72).
        min_heads: Fewest query heads an active layer keeps (official 8 of 32; [scaled] 1).
        min_layers: Fewest active layers; ``None``: ``floor(27/32 · L)`` (official 27 of 32).
        mlp_block: FFN channels per block (official ``MLP_ALIGNMENT`` 32).
        protection: Depth protection of the importance-guided initialisation: a layer's score
            is multiplied by ``1 + protection · index / L`` (official 0.15).
        calib_batch: Calibration blocks per forward/backward (official batch 4).
        max_attempts: Children drawn per generation before giving up, as a multiple of
            ``population`` (children outside the window are skipped, not repaired) [choice].
    """

    sparsity: float = 0.25
    window: float = 0.03
    proxy: str = "pearson"
    population: int = 8
    iterations: int = 10
    elites: int = 4
    crossover_prob: float = 0.7
    mutation_prob: float = 0.2
    mutation_strength: float = 0.3
    depth_mutation: float = 0.1
    max_layer_pruning: float = 0.72
    min_heads: int = 1
    min_layers: int | None = None
    mlp_block: int = 32
    protection: float = 0.15
    calib_batch: int = 4
    max_attempts: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self.window, "window", 0.0, 1.0, open_low=True)
        check_choice(self.proxy, "proxy", PROXIES)
        check_int(self.population, "population", 1)
        check_int(self.iterations, "iterations", 0)
        check_int(self.elites, "elites", 1)
        for name in ("crossover_prob", "mutation_prob", "depth_mutation"):
            check_number(getattr(self, name), name, 0.0, 1.0)
        check_number(self.mutation_strength, "mutation_strength", 0.0, finite=True)
        check_number(self.max_layer_pruning, "max_layer_pruning", 0.0, 1.0, open_high=True)
        check_int(self.min_heads, "min_heads", 1)
        if self.min_layers is not None:
            check_int(self.min_layers, "min_layers", 1)
        check_int(self.mlp_block, "mlp_block", 1)
        check_number(self.protection, "protection", 0.0, finite=True)
        check_int(self.calib_batch, "calib_batch", 1)
        check_int(self.max_attempts, "max_attempts", 1)
