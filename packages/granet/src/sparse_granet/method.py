"""GraNet: gradual global magnitude pruning with zero-cost neuroregeneration.

Paper: Shiwei Liu, Tianlong Chen, Xiaohan Chen, Zahra Atashgahi, Lu Yin, Huanyu Kou, Li Shen,
Mykola Pechenizkiy, Zhangyang Wang, Decebal Constantin Mocanu, "Sparse Training via Boosting
Pruning Plasticity with Neuroregeneration", NeurIPS 2021, arXiv 2106.10404.
Official code: https://github.com/Shiweiliuiiiiiii/GraNet (``CIFAR/sparselearning/core.py``:
``Masking.step``, ``pruning``, ``truncate_weights``, ``magnitude_death``, ``gradient_growth``,
``CosineDecay``; ``CIFAR/main.py``). This is an independent implementation on sparsecore.

The algorithm, as the official code runs it (read from ``core.py`` at commit f338a24):

* Masks cover every Linear / Conv weight. Initialisation: dense (``init_density = 1``,
  dense-to-sparse) or a random mask at ERK layer densities (``init_density = 0.5``,
  sparse-to-sparse).
* After every optimizer step the weights (and momentum) are masked and the regeneration fraction
  is stepped: ``p_t = p_f + (p_0 - p_f) / 2 * (1 + cos(pi t / T))`` with ``p_0 = 0.5``,
  ``p_f = 0.005`` and ``T`` the whole training length (``CosineAnnealingLR``, ``eta_min=0.005``).
* Every ΔT steps from t₀ on, at update index ``c = t / ΔT``:

  (a) if ``c0 <= c <= cf`` (``c0 = t0 // ΔT``, ``cf = tf // ΔT``), global magnitude pruning to
      ``s_c = (1 - d_i) + (d_i - d_f) (1 - (1 - (c - c0) / (cf - c0))^3)``;
  (b) then, in every layer, zero-cost neuroregeneration: drop the ``r = ceil(p_t n)`` active
      weights of smallest ``|w|`` (``n``: the layer's nnz after (a)), regrow the ``r`` positions
      of largest dense ``|grad|`` (current minibatch) among those inactive after the drop.
      Per-layer nnz is preserved, so (b) never changes the sparsity (a) set.

  Regeneration keeps running after t_f, every ΔT steps until the end of training, at the
  decayed ``p_t`` (the official ``step`` calls ``truncate_weights`` unconditionally; only
  ``pruning`` checks the window).

Implementation choices (each differs from the official code only where stated, and why):

1. **Pruning window includes c_f.** The official loop prunes while ``c0 <= c <= cf - 1``, so it
   stops at ``s_f - (d_i - d_f) / (cf - c0)^3`` and never reaches the requested sparsity
   exactly (a gap of (d_i - d_f) / 31³ ≈ 3e-5 at CIFAR scale, but ≈ 1e-3 with 10 updates).
   We also prune at ``c = cf``, where the formula gives exactly ``s_f``; every earlier update
   uses the official value.
2. **Exact global count.** The official code keeps ``|w| > thr`` with ``thr`` the ``k``-th
   largest ``|w|`` (``k = int(N (1 - s_c))``): the strict comparison keeps ``k - 1`` entries
   when values are distinct and drops every tie at the threshold. Its purpose (the code comment)
   is never to re-admit zero-valued (masked) entries. We keep exactly ``k = floor(N (1 - s_c))``
   by a global top-k over *active* entries (masked entries rank last and are never re-admitted;
   if fewer than ``k`` are active, all are kept), with sparsecore's deterministic tie-breaking.
3. **Drop count** ``r = ceil(p_t n)`` exactly as ``magnitude_death`` (RigL uses the floor).
   The official code drops ``|w| <= sorted(|w|)[zeros + r - 1]``, i.e. exactly ``r`` active
   weights when magnitudes are distinct; we drop exactly ``r`` always (ties: higher index first).
4. **Growth only among inactive positions.** ``gradient_growth`` sorts ``|grad| * (mask == 0)``
   over *all* positions, so when fewer than ``r`` inactive positions have a non-zero gradient it
   may "regrow" already-active ones and the layer loses weights. We rank inactive positions
   only, so #regrown = #dropped always.
5. **A weight dropped and regrown in the same update keeps its value and momentum**, as in the
   official ``truncate_weights`` (it edits the mask twice and applies it once at the end). Newly
   grown positions (inactive before the update) start at exactly 0 with zero optimizer state
   (they were masked, so their weight and state are already 0). The mask is therefore updated
   once, with the final drop-and-grow result.
6. **Sparse initialisation** uses sparsecore's ERK (dense layers solved together, not one at a
   time as in the official loop; the result is the same unless several layers saturate at
   once) and draws exactly ``floor(d_l n_l)`` entries per layer from the method's seeded
   generator instead of a Bernoulli mask, so every DDP rank builds the same mask and the density
   is exact.
7. **Times in steps.** t₀, t_f, ΔT and T are optimizer steps (the official code derives them
   from epochs × batches per epoch). As there, ``c0 = begin_step // ΔT`` and
   ``cf = end_step // ΔT`` are floored; ``total_steps`` defaults to ``2 * end_step``.
8. **Dense gradients** are the unmasked gradients of the step that triggers the update, read
   before the optimizer step (sparsecore's ``wants_dense_grads``); under DDP they are the
   all-reduced gradients, so every rank computes the same masks.
9. **Optimizers.** Official masks only SGD's ``momentum_buffer``; sparsecore masks every
   optimizer-state tensor shaped like the weight (Adam moments too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from sparse_granet.config import GraNetConfig
from sparsecore import MethodConfig, PruningMethod, Unstructured
from sparsecore.patterns import Pattern
from sparsecore.select import drop_lowest, grow_highest, select_global
from sparsecore.taxonomy import Taxonomy

__all__ = ["GraNet", "global_magnitude_prune", "regenerate_layer", "regeneration_count"]


# ---------------------------------------------------------------------- the two updates, pure
@torch.no_grad()
def global_magnitude_prune(
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    sparsity: float,
) -> dict[str, torch.Tensor]:
    """One step of gradual global magnitude pruning (GraNet step (a)).

    All active ``|w|`` of all layers are ranked together and the top
    ``k = floor(N * (1 - sparsity))`` are kept (``N``: total entries of all layers), so the
    global nnz afterwards is exactly ``k``. Masks only shrink: inactive entries are never
    selected, and if fewer than ``k`` entries are active they are all kept (this is what the
    official strict ``|w| > threshold`` achieves when the threshold is 0).

    Args:
        weights: Weight tensors by name.
        masks: Current boolean masks by name (same keys and shapes).
        sparsity: Target global sparsity ``s_c`` in ``[0, 1)``.

    Returns:
        New boolean keep-masks by name.
    """
    scores = {
        name: torch.where(masks[name], weight.detach().abs().to(torch.float64), -math.inf)
        for name, weight in weights.items()
    }
    keeps = select_global(scores, 1.0 - sparsity)
    return {name: keep & masks[name] for name, keep in keeps.items()}


def regeneration_count(nnz: int, fraction: float) -> int:
    """``r = ceil(p_t * n)``, the number of weights dropped and regrown in a layer.

    The official ``magnitude_death`` uses ``math.ceil(prune_rate * nonzeros)``; RigL uses the
    floor. Clipped to ``[0, nnz]``.
    """
    return min(max(math.ceil(fraction * nnz), 0), nnz)


@torch.no_grad()
def regenerate_layer(
    weight: torch.Tensor,
    mask: torch.Tensor,
    grad: torch.Tensor,
    fraction: float,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Zero-cost neuroregeneration of one layer (GraNet step (b)).

    Drops the ``r = ceil(fraction * nnz)`` active weights of smallest ``|w|``, then regrows the
    ``r`` positions of largest ``|grad|`` among all positions inactive after the drop (which
    includes the ones just dropped). The layer's nnz is unchanged.

    Args:
        weight: The layer's weight.
        mask: Its current boolean mask.
        grad: The dense gradient of the current minibatch (unmasked).
        fraction: p_t.

    Returns:
        ``(after_drop, new_mask, r)``: the mask after the drop phase, the final mask, and ``r``.
    """
    count = regeneration_count(int(mask.sum()), fraction)
    if count == 0:
        return mask.clone(), mask.clone(), 0
    after_drop = drop_lowest(weight.detach().abs(), mask, count)
    new_mask = grow_highest(grad.detach().abs(), after_drop, count)
    return after_drop, new_mask, count


# ---------------------------------------------------------------------- the method


class GraNet(PruningMethod):
    """GraNet (Liu et al., NeurIPS 2021) on sparsecore.

    ```python
    method = GraNet(sparsity=0.9, init_density=0.5, update_every=50,
                    end_step=1500, total_steps=3000).setup(model, optimizer)
    for x, y in loader:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()   # hooks do the rest
    method.finalize()
    ```

    Args:
        config: A `sparse_granet.GraNetConfig`.
        **overrides: Config fields (e.g. ``sparsity=0.95, init_density=1.0``).

    Attributes:
        history: One record per update step: ``step``, ``sparsity`` (the pruning target, or
            ``None`` outside the pruning window), ``fraction`` (p_t, or ``None`` without
            regeneration), ``regrown`` (per layer: weights dropped = weights regrown) and
            ``nnz`` (global, after the update).
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured",),
        "during",
        "sparse-to-sparse",
        "dynamic",
        note="init_density=1.0 makes it dense-to-sparse",
    )

    name = "granet"
    config_class: ClassVar[type[MethodConfig]] = GraNetConfig
    mask_mode = "hard"
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured,)
    config: GraNetConfig

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.history: list[dict[str, Any]] = []

    @classmethod
    def bench_config(cls, total_steps: int, sparsity: float | None) -> dict[str, Any]:
        """Config overrides for one ``sparse bench`` run (see ``sparsecore.bench.build_method``).

        The sparse start (``init_density = 0.5``) needs a final density below 0.5. At lower
        target sparsities the run uses the paper's dense-to-sparse variant (``init_density =
        1``), which the paper reports beside the sparse-to-sparse one.
        """
        default = cls.config_class().init_density  # type: ignore[attr-defined]
        if sparsity is not None and 1.0 - sparsity >= default:
            return {"init_density": 1.0}
        return {}

    # ------------------------------------------------------------------ schedules
    def is_update_step(self, step: int) -> bool:
        """Whether a mask update runs after ``step`` completed steps (every ΔT from t₀ on)."""
        return step >= max(self.config.begin_step, 1) and step % self.config.update_every == 0

    def target_sparsity(self, step: int) -> float | None:
        """The global pruning target at update ``step``, or ``None`` outside the window."""
        index = step // self.config.update_every
        if not self.config.first_update <= index <= self.config.last_update:
            return None
        return self.config.sparsity_schedule(index)

    def schedule_gap(self) -> str | None:
        """Why the pruning window is not complete (the last pruning update is at
        ``⌊end_step / ΔT⌋ · ΔT``), or ``None``.
        """
        return self.config.window.gap(self.step, "GraNet")

    def fraction_at(self, step: int) -> float:
        """p_t, the regeneration fraction after ``step`` completed steps (cosine-annealed)."""
        return self.config.fraction_schedule(step)

    # ------------------------------------------------------------------ hooks
    def init_masks(self) -> None:
        """Dense (``init_density = 1``) or random at ERK/uniform layer densities."""
        if self.config.init_density >= 1.0:
            return
        self.random_masks(self.config.init_distribution, self.config.init_density)

    def wants_dense_grads(self, step: int) -> bool:  # noqa: D102
        return self.config.regenerate and self.is_update_step(step)

    def on_after_optimizer_step(self) -> None:
        """At update steps: (a) global magnitude pruning in the window, (b) regeneration."""
        if not self.is_update_step(self.step):
            return
        sparsity = self.target_sparsity(self.step)
        if sparsity is not None:
            self.prune_to(sparsity)
        fraction, regrown = None, {}
        if self.config.regenerate:
            fraction = self.fraction_at(self.step)
            regrown = self.regenerate(fraction)
        self.history.append(
            {
                "step": self.step,
                "sparsity": sparsity,
                "fraction": fraction,
                "regrown": regrown,
                "nnz": sum(self.masks.nnz().values()),
            }
        )

    # ------------------------------------------------------------------ the two updates
    @torch.no_grad()
    def prune_to(self, sparsity: float) -> int:
        """Global magnitude pruning of the active weights to ``sparsity``.

        Returns:
            The global nnz afterwards: ``floor(N (1 - sparsity))``, or the current nnz if that
            is smaller (masks only shrink).
        """
        masks = self.masks.masks()
        keeps = global_magnitude_prune(self.masks.params(), masks, sparsity)
        self.masks.update_all(keeps)
        return sum(self.masks.nnz().values())

    @torch.no_grad()
    def regenerate(self, fraction: float) -> dict[str, int]:
        """Zero-cost neuroregeneration of every layer with the step's dense gradients.

        Uses ``self.dense_grads`` (filled by sparsecore before the optimizer step when
        `wants_dense_grads` is true); a layer without a gradient regrows at the lowest
        inactive indices (all scores 0).

        Args:
            fraction: p_t.

        Returns:
            Per layer, ``r``: the number of weights dropped, equal to the number regrown.
        """
        grads = self.dense_grads or {}
        regrown: dict[str, int] = {}
        for name, weight in self.masks.params().items():
            mask = self.masks.mask(name)
            grad = grads.get(name)
            if grad is None:
                grad = torch.zeros_like(weight)
            _, new_mask, count = regenerate_layer(weight, mask, grad, fraction)
            regrown[name] = count
            if count:
                # One update with the final mask: weights dropped and regrown in this round keep
                # their value and momentum; newly grown ones were masked, hence exactly 0.
                self.masks.update(name, new_mask)
        return regrown

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        return {"history": list(self.history)}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.history = list(state.get("history", []))
