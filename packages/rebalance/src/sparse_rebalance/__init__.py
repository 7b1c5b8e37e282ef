"""ReBalance (Li et al., ICLR 2026): confidence-guided steering against over- and under-thinking.

Public API:

* `ReBalance` / `ReBalanceConfig`: the online controller, a `sparsecore.Procedure` (entry point
  ``rebalance``) that steers any Hugging Face causal LM through hooks;
* `ControlSurface`: the official ``α = F(c, v)``;
* `calibrate`, `trace_steps`, `choose_layer`, `label_steps`, `has_reflection`,
  `SteeringCalibration`: the offline pass (confidences, layer choice, labels, steering vector);
* `ReflectionSuppression`, `ThinkingBudget`: the simple baselines (NoWait-style token ban, s1
  budget forcing);
* `ReasoningTokenizer`, `Problem`, `make_problems`, `training_trace`, `parse_answer`,
  `reasoning_lm`: the reasoning toy and its fine-tuned model;
* `generate`, `score`, `offline_pass`: sampling and metrics.
"""

from sparse_rebalance.baselines import (
    ReflectionSuppression,
    SuppressionConfig,
    ThinkingBudget,
    ThinkingBudgetConfig,
)
from sparse_rebalance.control import HIGH_VAL_1, ControlSurface, solve_k
from sparse_rebalance.evaluation import TOY_IDS, generate, offline_pass, score
from sparse_rebalance.model import FINETUNE, reasoning_lm
from sparse_rebalance.offline import (
    LEXICON,
    SteeringCalibration,
    TraceSteps,
    calibrate,
    choose_layer,
    has_reflection,
    label_steps,
    trace_steps,
)
from sparse_rebalance.reasoning import (
    END_THINK,
    EOS,
    STEP,
    THINK,
    Problem,
    ReasoningTokenizer,
    make_problems,
    parse_answer,
    training_trace,
)
from sparse_rebalance.steering import ReBalance, ReBalanceConfig

__version__ = "0.1.0"

__all__ = [
    "END_THINK",
    "EOS",
    "FINETUNE",
    "HIGH_VAL_1",
    "LEXICON",
    "STEP",
    "THINK",
    "TOY_IDS",
    "ControlSurface",
    "Problem",
    "ReBalance",
    "ReBalanceConfig",
    "ReasoningTokenizer",
    "ReflectionSuppression",
    "SteeringCalibration",
    "SuppressionConfig",
    "ThinkingBudget",
    "ThinkingBudgetConfig",
    "TraceSteps",
    "__version__",
    "calibrate",
    "choose_layer",
    "generate",
    "has_reflection",
    "label_steps",
    "make_problems",
    "offline_pass",
    "parse_answer",
    "reasoning_lm",
    "score",
    "solve_k",
    "trace_steps",
    "training_trace",
]
