"""ReBalance's offline pass: step confidences, step-start hidden states, layer, steering vector.

Official code (yu-lin-li/ReBalance), read for each rule:

* ``transformer_inference_dp.py``: sample a response per seen problem (temperature 0.7, top-p
  0.95); split the text before ``</think>`` into segments at the step separator; a segment's
  confidence is ``exp(mean log p)`` of its sampled tokens ("avg2"); hidden states of *every*
  layer at the step positions ``i + 1`` for each separator token ``i`` strictly before the last
  token preceding ``</think>`` (``output_hidden_states`` entry ``l`` is the input of decoder
  layer ``l``).
* ``hidden_analysis_auto.py``: global quartiles ``q25``/``q75`` of all segment confidences and of
  ``v = (c_j − c_{j−1})² / 4``; step vector ``j`` pairs with segment ``j + 1`` (the official
  ``expected_offset = 1``: the state at a step's first token, labelled by that step); label 1 if
  the segment hits the reflection lexicon *or* ``c < q25``, label 0 if no hit *and* ``c > q75``,
  otherwise dropped; ``S = mean(h | 1) − mean(h | 0)``.
* ``hidden_config_ridge.py``: the layer is the argmax over layers of the test R² of
  ``PCA(64) → Ridge(α = 1)`` predicting the step confidence from the step vector
  (``train_test_split(test_size=0.2, random_state=42)``, PCA components capped by the samples).

Deviation, labelled: the official code maps text segments back to token spans by
re-tokenising each segment without its separator, which shifts every later window by one token
per step; here the spans are the exact token runs between separator tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sparsecore.validation import check_choice

__all__ = [
    "LEXICON",
    "SteeringCalibration",
    "TraceSteps",
    "calibrate",
    "choose_layer",
    "has_reflection",
    "label_steps",
    "trace_steps",
]

#: The official reflection lexicon (``hidden_analysis_auto.LEXICON_BASE``).
LEXICON = (
    "alternatively", "alternative", "another", "perhaps", "maybe", "wait", "but",
    "think again", "make sure", "just to ensure", "there any other", "some other",
    "should consider", "about whether", "if they have", "i was", "any errors",
    "or something", "let me check", "hold on", "double check", "however",
    "confusing", "differently", "careful", "sometimes", "alternate",
)  # fmt: skip
_VARIANTS = {
    "verify": r"verif(?:y|ies|ied|ying|ication(?:s)?)",
    "alternative": r"alternative(?:s|ly)?",
    "confusing": r"confus(?:e|es|ed|ing)",
    "differently": r"different(?:ly)?",
    "careful": r"careful(?:ly)?",
    "sometimes": r"sometimes?",
    "alternate": r"alternat(?:e|es|ed|ing)",
}


def _term(term: str) -> str:
    parts = [_VARIANTS.get(p, re.escape(p)) for p in term.lower().split()]
    return r"\b" + r"(?:[-\s]+)".join(parts) + r"\b"


_LEXICON_RE = re.compile("|".join(_term(t) for t in LEXICON), flags=re.IGNORECASE)


def has_reflection(text: str) -> bool:
    """Whether ``text`` contains a reflection-lexicon term (official regex rules)."""
    normal = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u2014", "-")
    return _LEXICON_RE.search(normal.replace("\u2013", "-").lower()) is not None


@dataclass
class TraceSteps:
    """One sampled trace cut into steps.

    Attributes:
        texts: Segment texts before ``</think>`` (the first one included).
        confidences: ``exp(mean log p)`` of each segment's tokens.
        hidden: ``(layers + 1, V, d)`` states at the step positions (V = segments − 1).
    """

    texts: list[str]
    confidences: list[float]
    hidden: torch.Tensor


@torch.no_grad()
def trace_steps(
    model: nn.Module,
    prompt: Sequence[int],
    generated: Sequence[int],
    *,
    split_ids: Sequence[int],
    think_end_id: int,
    decode,
) -> TraceSteps | None:
    """Segments, confidences and step-start hidden states of one trace (module docstring).

    Returns ``None`` when the trace has no complete step pair (nothing to pair).
    """
    full = torch.tensor([list(prompt) + list(generated)])
    out = model(input_ids=full, output_hidden_states=True, use_cache=False)
    logp = torch.log_softmax(out.logits[0, :-1].float(), dim=-1)
    start = len(prompt)
    gen = list(generated)
    token_logp = logp[start - 1 + torch.arange(len(gen)), torch.tensor(gen)]
    end = gen.index(think_end_id) if think_end_id in gen else len(gen)
    splits = set(int(s) for s in split_ids)
    texts, confs, span = [], [], []
    for i in range(end):
        if gen[i] in splits:
            if span:
                texts.append(decode([gen[j] for j in span]))
                confs.append(float(torch.exp(token_logp[span].mean())))
            span = []
        else:
            span.append(i)
    if span:
        texts.append(decode([gen[j] for j in span]))
        confs.append(float(torch.exp(token_logp[span].mean())))
    positions = [start + i + 1 for i in range(end - 1) if gen[i] in splits]
    if len(texts) < 2 or not positions:
        return None
    hidden = torch.stack([h[0, positions].float() for h in out.hidden_states])
    return TraceSteps(texts, confs, hidden)


def label_steps(
    steps: Sequence[TraceSteps], q25: float, q75: float
) -> tuple[list[torch.Tensor], list[int], list[float]]:
    """Pair vectors with segments (offset 1) and label them: ``(vectors, labels, confidences)``.

    ``vectors[i]`` is ``(layers + 1, d)``; labels are 1 (reflective or unsure), 0 (confident, no
    reflection); the middle band is dropped.
    """
    vectors, labels, confs = [], [], []
    for trace in steps:
        segments = trace.texts[1:]
        confidences = trace.confidences[1:]
        count = min(trace.hidden.shape[1], len(segments), len(confidences))
        for j in range(count):
            hit, c = has_reflection(segments[j]), confidences[j]
            if hit or c < q25:
                label = 1
            elif c > q75:
                label = 0
            else:
                continue
            vectors.append(trace.hidden[:, j])
            labels.append(label)
            confs.append(c)
    return vectors, labels, confs


def choose_layer(
    features: torch.Tensor, targets: torch.Tensor, components: int = 64, seed: int = 42
) -> tuple[int, list[float]]:
    """The layer whose PCA + Ridge regression predicts the step confidence best (test R²).

    Args:
        features: ``(layers + 1, N, d)`` step vectors.
        targets: ``(N,)`` step confidences.
        components: PCA components (capped by samples and width), official 64.
        seed: ``random_state`` of the split and PCA (official 42).

    Returns:
        ``(layer, R² per layer)``.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split

    y = targets.double().numpy()
    scores = []
    for layer in range(features.shape[0]):
        x = features[layer].double().numpy()
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=seed)
        k = min(components, x_tr.shape[0], x_tr.shape[1])
        pca = PCA(n_components=k, random_state=seed).fit(x_tr)
        reg = Ridge(alpha=1.0).fit(pca.transform(x_tr), y_tr)
        scores.append(float(r2_score(y_te, reg.predict(pca.transform(x_te)))))
    return int(np.argmax(scores)), scores


@dataclass
class SteeringCalibration:
    """Everything the online controller needs from the offline pass.

    Attributes:
        layer: Decoder-layer index whose *input* is steered (``layers`` = before the final norm).
        vector: The steering vector ``S``, ``(hidden,)``.
        q25c, q75c, q25v, q75v: Confidence and variance quartiles.
        r2: Test R² per layer (the layer choice).
        positives, negatives: Step counts behind ``S``.
    """

    layer: int
    vector: torch.Tensor
    q25c: float
    q75c: float
    q25v: float
    q75v: float
    r2: list[float]
    positives: int
    negatives: int


def calibrate(steps: Sequence[TraceSteps], quartiles: str = "all") -> SteeringCalibration:
    """Quartiles, layer choice, labels and ``S`` from sampled traces (module docstring).

    Args:
        steps: The traces (`trace_steps`).
        quartiles: ``"all"`` (official: the confidence quartiles over every segment, the first
            included) or ``"paired"`` (over the segments that label a vector, offset 1). On
            short traces whose first step copies the prompt (near-certain), ``"all"`` can put
            ``q75`` above every later step and leave no negative step.

    Raises:
        ValueError: Too few steps, a bad ``quartiles``, or a class left empty by the labelling
            rule.
    """
    quartiles = check_choice(quartiles, "quartiles", ("all", "paired"))
    first = 0 if quartiles == "all" else 1
    all_c = torch.tensor([c for t in steps for c in t.confidences[first:]], dtype=torch.float64)
    diffs = [
        (t.confidences[j] - t.confidences[j - 1]) ** 2 / 4.0
        for t in steps
        for j in range(1, len(t.confidences))
    ]
    if all_c.numel() < 8 or len(diffs) < 4:
        raise ValueError("steps: too few calibration steps (sample more traces)")
    q25c, q75c = (float(all_c.quantile(q)) for q in (0.25, 0.75))
    v = torch.tensor(diffs, dtype=torch.float64)
    q25v, q75v = (float(v.quantile(q)) for q in (0.25, 0.75))
    pairs_x, pairs_c = [], []
    for t in steps:
        count = min(t.hidden.shape[1], len(t.confidences) - 1)
        for j in range(count):
            pairs_x.append(t.hidden[:, j])
            pairs_c.append(t.confidences[j + 1])
    features = torch.stack(pairs_x, dim=1)
    layer, r2 = choose_layer(features, torch.tensor(pairs_c))
    vectors, labels, _ = label_steps(steps, q25c, q75c)
    lab = torch.tensor(labels)
    if not (lab == 1).any() or not (lab == 0).any():
        raise ValueError("steps: the labelling rule left a class empty (try quartiles='paired')")
    stacked = torch.stack(vectors)[:, layer]
    vector = stacked[lab == 1].mean(0) - stacked[lab == 0].mean(0)
    return SteeringCalibration(
        layer, vector, q25c, q75c, q25v, q75v, r2, int((lab == 1).sum()), int((lab == 0).sum())
    )
