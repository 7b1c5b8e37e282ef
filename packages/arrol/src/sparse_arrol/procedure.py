"""ARRoL as a `sparsecore.Procedure`: prune rollouts as they are generated, learn whom to keep.

Paper: Xu et al., "Prune as You Generate: Online Rollout Pruning for Faster and Better RLVR",
arXiv 2603.24840 (ACL 2026). Official repository Hsu1023/ARRoL: checked again for this package
(``fetch github:Hsu1023/ARRoL``, newest stored snapshot commit ``fe9ad20`` "init"): it holds only
``README.md`` ("We will release the code and data soon"); the code search, issue and page corpora
hold no other implementation. Everything below is therefore from the paper's description (via the
team digest) and labelled [paper] or [recon].

One RL step with ARRoL attached to the policy (`ARRoL.step`, on `sparsecore.rl.grpo_step`):

1. [paper] ``N`` rollouts per prompt are generated to the detection length ``detect_step``
   (``L_detect``; 512 tokens in the paper, a few tokens on the toy tasks);
2. [paper] the quality head (`sparse_arrol.head.QualityHead`) maps each partial rollout's
   last-layer hidden state to ``p̂``, calibrated by the bucketed estimates
   (`sparse_arrol.head.BucketCalibrator`);
3. [paper] per prompt, ``round(K·N)`` survivors are kept whose mean calibrated ``p̂`` is closest to
   ``p`` (`sparse_arrol.selection.balanced_subset`; the search and tie-break are [recon]); the
   others leave the generation batch and its KV cache at once (`sparsecore.rl.generate_rollouts`),
   so they generate no further token;
4. [paper] survivors finish, are scored (exact-match reward), get group advantages over the
   survivors only, and are re-batched for the log-prob pass and the policy update;
5. [paper] the head is trained online with BCE on the completed survivors, and their raw
   predictions and rewards update the calibration bins [recon: before the head's update, so the
   bins describe the predictions that were used]. [recon] The head trains on a buffer of the
   ``buffer_size`` most recent completed rollouts (one batch of 64 survivors overfits a 64-wide
   MLP), ``head_updates`` Adam steps per RL step.

Deviation offered, labelled (``features="hidden+logprob"``): the head's input is the hidden
state *and* the mean sampling log-prob of the partial rollout's tokens. Measured on the toy
(reversal of 8 letters, warm-started micro Llama, 2048 rollouts, 3/4 train): an MLP on the
hidden state alone at ``L_detect = 3 / 4`` separates correct from wrong rollouts with AUC
0.54 / 0.63, the summed log-prob alone 0.70 / 0.81. The default is the paper's ``"hidden"``.

Rollouts that ended (EOS) before ``detect_step`` are scored by the head like the others (their
state is that of their last forward pass) [recon]. With ``keep_ratio = 1`` nothing is pruned but
the head still learns (a GRPO run with a head for quality-weighted voting).

`RandomRolloutPruning` is the paper's natural control: the same ``K`` and detection step,
survivors drawn uniformly per prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_arrol.head import BucketCalibrator, QualityHead
from sparse_arrol.selection import keep_count, prune_groups
from sparsecore.procedure import Procedure, ProcedureConfig
from sparsecore.rl import DetectInfo, GRPOConfig, Problem, RolloutBatch, StepResult, ToyTask
from sparsecore.rl import grpo_step as _grpo_step
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_choice, check_int, check_number

__all__ = ["FEATURES", "ARRoL", "ARRoLConfig", "RandomPruningConfig", "RandomRolloutPruning"]

#: Inputs the quality head can read (`ARRoLConfig.features`).
FEATURES = ("hidden", "hidden+logprob")


def _hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    size = getattr(config, "hidden_size", None)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(
            "model must be a Hugging Face causal LM whose config has an integer hidden_size"
        )
    if not callable(getattr(model, "get_output_embeddings", None)) or (
        model.get_output_embeddings() is None
    ):
        raise ValueError("model must be a causal LM with an output embedding (an LM head)")
    return size


def _auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC of ``scores`` for 0/1 ``labels`` (ties count half; NaN with one class)."""
    pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)


@dataclass(frozen=True)
class RandomPruningConfig(ProcedureConfig):
    """Options shared by the rollout pruners.

    Attributes:
        keep_ratio: ``K``, the fraction of each prompt's rollouts that survive (``(0, 1]``).
        detect_step: ``L_detect``, tokens generated before pruning (``>= 1``).
    """

    keep_ratio: float = 0.5
    detect_step: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self.keep_ratio, "keep_ratio", 0.0, 1.0, open_low=True)
        check_int(self.detect_step, "detect_step", 1)


@dataclass(frozen=True)
class ARRoLConfig(RandomPruningConfig):
    """Options of ARRoL (paper defaults where the paper gives them: ``K = 0.5``, ``p = 0.5``).

    Attributes:
        target: ``p``, the survivors' expected positive fraction aimed at.
        head_width: Hidden width of the quality head's MLP [recon].
        head_lr: Adam learning rate of the head [recon].
        head_updates: Full-batch BCE steps of the head per RL step [recon].
        bins: Calibration bins [recon].
        calibration_prior: Beta-prior strength of the bucketed estimate [recon].
        calibration_decay: Decay of the bins' counts per update [recon].
        exhaustive_limit: Largest ``C(N, k)`` searched exhaustively by the selection.
        features: The head's input: ``"hidden"`` (the paper's: the partial rollout's hidden
            state) or ``"hidden+logprob"`` (deviation, labelled: the hidden state and the mean
            sampling log-prob of the partial rollout's tokens, a confidence signal that the tiny
            models' hidden states carry only weakly).
        buffer_size: Most recent completed rollouts the head is trained on [recon].
    """

    target: float = 0.5
    head_width: int = 64
    head_lr: float = 3e-3
    head_updates: int = 4
    bins: int = 10
    calibration_prior: float = 2.0
    calibration_decay: float = 0.95
    exhaustive_limit: int = 20000
    features: str = "hidden"
    buffer_size: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.features, "features", FEATURES)
        check_int(self.buffer_size, "buffer_size", 1)
        check_number(self.target, "target", 0.0, 1.0)
        check_int(self.head_width, "head_width", 1)
        check_number(self.head_lr, "head_lr", 0.0, open_low=True, finite=True)
        check_int(self.head_updates, "head_updates", 1)
        check_int(self.bins, "bins", 1)
        check_number(self.calibration_prior, "calibration_prior", 0.0, finite=True)
        check_number(self.calibration_decay, "calibration_decay", 0.0, 1.0, open_low=True)
        check_int(self.exhaustive_limit, "exhaustive_limit", 0)


class _RolloutPruner(Procedure):
    """Shared lifecycle: validate a causal LM, expose `detect`, run one pruned GRPO step."""

    config: RandomPruningConfig
    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured",),
        "during",
        "dense-to-sparse",
        "dynamic",
        sparsifies=("rollouts",),
        note="rollouts pruned mid-generation during RL; weights untouched",
    )
    bench_scenario: ClassVar[str | None] = "rlvr-toy"

    def validate(self, model: nn.Module) -> None:
        """Refuse anything but a causal LM with an integer ``config.hidden_size``."""
        _hidden_size(model)

    def keep_per_group(self, n: int) -> int:
        """Survivors kept out of a group of ``n`` rollouts."""
        return keep_count(self.config.keep_ratio, n)

    def detect(self, info: DetectInfo) -> torch.Tensor:
        """The ``detect`` callback of `sparsecore.rl.generate_rollouts`: survivors' indices."""
        raise NotImplementedError

    def observe(self, batch: RolloutBatch, rewards: torch.Tensor) -> None:
        """Learn from a finished step (nothing for the random baseline)."""

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        task: ToyTask,
        problems: Sequence[Problem],
        config: GRPOConfig,
        generator: torch.Generator,
    ) -> StepResult:
        """One GRPO/DAPO step of the attached policy with this pruner, then `observe`."""
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__} is not attached")
        if self.config.detect_step >= config.max_new_tokens:
            raise ValueError(
                f"detect_step must be < max_new_tokens ({config.max_new_tokens}), "
                f"got {self.config.detect_step}"
            )
        result = _grpo_step(
            self.model, optimizer, task, problems, config, generator,
            detect=self.detect, detect_step=self.config.detect_step,
        )  # fmt: skip
        self.observe(result.batch, result.rewards)
        return result


class RandomRolloutPruning(_RolloutPruner):
    """Baseline: at ``detect_step`` keep ``round(K·N)`` rollouts per prompt uniformly at random."""

    name = "random-rollout-pruning"
    config_class: ClassVar[type[ProcedureConfig]] = RandomPruningConfig

    def detect(self, info: DetectInfo) -> torch.Tensor:  # noqa: D102
        keep = []
        for g in torch.unique(info.groups).tolist():
            members = (info.groups == g).nonzero().flatten()
            k = self.keep_per_group(members.numel())
            keep.append(members[torch.randperm(members.numel(), generator=self.generator)[:k]])
        return torch.cat(keep).sort().values


class ARRoL(_RolloutPruner):
    """Online rollout pruning with a learned, calibrated quality head (module docstring).

    Example:
        >>> arrol = ARRoL(keep_ratio=0.5, target=0.5, detect_step=3).attach(policy)
        >>> result = arrol.step(optimizer, task, problems, GRPOConfig(num_samples=8), gen)
        >>> arrol.score(hidden)        # calibrated success estimates, for weighted voting
    """

    name = "arrol"
    config_class: ClassVar[type[ProcedureConfig]] = ARRoLConfig
    config: ARRoLConfig

    def __init__(self, config: ARRoLConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        c = self.config
        self.head: QualityHead | None = None
        self.head_optimizer: torch.optim.Optimizer | None = None
        self.calibrator = BucketCalibrator(c.bins, c.calibration_prior, c.calibration_decay)
        self.history: list[dict[str, float]] = []
        self._last_raw: torch.Tensor | None = None
        self._buffer_x: torch.Tensor | None = None
        self._buffer_y: torch.Tensor | None = None

    # ------------------------------------------------------------------ attach
    @property
    def _extra(self) -> int:
        return 1 if self.config.features == "hidden+logprob" else 0

    def _build_head(self, hidden_size: int, generator: torch.Generator | None = None) -> None:
        gen = self.generator if generator is None else generator
        self.head = QualityHead(hidden_size + self._extra, self.config.head_width, gen)
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=self.config.head_lr)

    def validate(self, model: nn.Module) -> None:  # noqa: D102
        size = _hidden_size(model)
        if self.head is not None and self.head.net[0].in_features != size + self._extra:
            raise ValueError(
                f"model hidden_size {size} does not match the quality head's input "
                f"{self.head.net[0].in_features} (a state loaded from another model)"
            )

    def on_attach(self, model: nn.Module) -> None:  # noqa: D102
        if self.head is None:
            self._build_head(_hidden_size(model))

    def features_of(
        self, hidden: torch.Tensor, logprobs: torch.Tensor | None, lengths: torch.Tensor | None
    ) -> torch.Tensor:
        """The head's input for partial rollouts (`ARRoLConfig.features`)."""
        hidden = hidden.detach().float()
        if not self._extra:
            return hidden
        if logprobs is None or lengths is None:
            raise ValueError("features='hidden+logprob' needs the rollouts' log-probs and lengths")
        mean = logprobs.float() / lengths.clamp(min=1).float()
        return torch.cat([hidden, mean[:, None]], dim=-1)

    # ------------------------------------------------------------------ the rule
    def _need_head(self) -> QualityHead:
        if self.head is None:
            raise RuntimeError("ARRoL has no quality head yet: attach it to a model first")
        return self.head

    @torch.no_grad()
    def score(self, features: torch.Tensor, calibrated: bool = True) -> torch.Tensor:
        """``[R]`` success estimates from `features_of` partial rollouts."""
        raw = self._need_head()(features)
        return self.calibrator(raw) if calibrated else raw

    def score_info(self, info: DetectInfo) -> torch.Tensor:
        """Calibrated success estimates of the rollouts a ``detect`` callback sees."""
        return self.score(self.features_of(info.hidden, info.logprobs, info.lengths))

    def detect(self, info: DetectInfo) -> torch.Tensor:  # noqa: D102
        raw = self.score(self.features_of(info.hidden, info.logprobs, info.lengths), False)
        self._last_raw = raw
        c = self.config
        return prune_groups(
            self.calibrator(raw), info.groups, c.keep_ratio, c.target, self.generator,
            c.exhaustive_limit,
        )  # fmt: skip

    def observe(self, batch: RolloutBatch, rewards: torch.Tensor) -> None:
        """Calibrate and train the head (BCE) on the completed survivors of a step."""
        head = self._need_head()
        assert self.head_optimizer is not None
        if batch.detect_hidden is None:
            raise ValueError("batch has no detect_hidden: generate it with ARRoL.detect")
        done = batch.survivors
        if not done.any():
            return
        detect_lengths = batch.lengths.clamp(max=self.config.detect_step)
        feats = self.features_of(batch.detect_hidden, batch.detect_logprobs, detect_lengths)[done]
        labels = torch.as_tensor(rewards, dtype=torch.float32)[done]
        last = self._last_raw
        if last is None or last.shape[0] != done.shape[0]:  # not generated with self.detect
            with torch.no_grad():
                last = head(self.features_of(batch.detect_hidden, batch.detect_logprobs,
                                             detect_lengths))  # fmt: skip
        raw = last[done]
        auc = _auc(raw, labels)  # of the predictions used for pruning, before this update
        groups = batch.groups[done]
        within = [_auc(raw[groups == g], labels[groups == g]) for g in torch.unique(groups)]
        within = [a for a in within if a == a]  # groups holding both outcomes
        self.calibrator.update(raw, labels)
        if self._buffer_x is None or self._buffer_y is None:
            self._buffer_x, self._buffer_y = feats, labels
        else:
            self._buffer_x = torch.cat([self._buffer_x, feats])[-self.config.buffer_size :]
            self._buffer_y = torch.cat([self._buffer_y, labels])[-self.config.buffer_size :]
        x, y = self._buffer_x, self._buffer_y
        loss_value = 0.0
        for _ in range(self.config.head_updates):
            loss = nn.functional.binary_cross_entropy_with_logits(head.logits(x), y)
            self.head_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.head_optimizer.step()
            loss_value = float(loss.detach())
        self.history.append({
            "bce": loss_value, "n": float(done.sum()), "positive": float(labels.mean()),
            "auc": auc, "auc_within": sum(within) / len(within) if within else float("nan"),
        })  # fmt: skip

    # ------------------------------------------------------------------ state
    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        state: dict[str, Any] = {
            "calibration": self.calibrator.state_dict(),
            "history": [dict(h) for h in self.history],
        }
        if self._buffer_x is not None and self._buffer_y is not None:
            state["buffer_x"], state["buffer_y"] = self._buffer_x.clone(), self._buffer_y.clone()
        if self.head is not None and self.head_optimizer is not None:
            state["hidden_size"] = self.head.net[0].in_features - self._extra
            state["head"] = {k: v.clone() for k, v in self.head.state_dict().items()}
            state["head_optimizer"] = self.head_optimizer.state_dict()
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.calibrator.load_state_dict(state["calibration"])
        self.history = [dict(h) for h in state.get("history", [])]
        self._buffer_x, self._buffer_y = state.get("buffer_x"), state.get("buffer_y")
        if "head" in state:
            # weights are overwritten below: do not advance the restored generator
            self._build_head(int(state["hidden_size"]), torch.Generator().manual_seed(0))
            assert self.head is not None and self.head_optimizer is not None
            self.head.load_state_dict(state["head"])
            self.head_optimizer.load_state_dict(state["head_optimizer"])
