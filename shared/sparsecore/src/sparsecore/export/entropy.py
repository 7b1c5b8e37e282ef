"""Entropy coding of integer tensors under a factorised discretised-logistic prior.

Quantised weights, weight residuals and quantised latents are integers whose distribution a
small parametric prior describes well. This module turns such integers into bytes with a real
range coder (the ``constriction`` package, optional extra ``sparse-core[coding]``) and back,
bit-exactly, and says how many bits the prior predicts, so a method can report *measured* bits
(the length of the byte string) next to the estimate it trains against.

* `logistic_pmf`: the probability of each integer ``k`` in ``lo..hi`` under a logistic of
  location ``loc`` and scale ``scale`` discretised to unit bins
  (``p(k) = σ((k + ½ − loc)/scale) − σ((k − ½ − loc)/scale)``), the two tail masses folded into
  the end bins so that the table sums to one; computed in float64 numpy from float32 parameters,
  so encoder and decoder build the same table from the same stored parameters;
* `ideal_bits`: ``Σ −log₂ p(x)`` of integers under such a table (the estimate);
* `fit_logistic`: moment-matched ``(loc, scale)`` for integers (``scale = std·√3/π``), for
  post-training quantisation where no prior was learned;
* `RangeCoder`: encodes a sequence of integer tensors, each under its own table, into one range
  coded stream (``constriction.stream.queue.RangeEncoder`` with a ``Categorical`` model per
  tensor); `decode_range` reads them back given the same tables, in the same order.

CHOICES: a categorical table per tensor rather than constriction's built-in ``QuantizedLogistic``
(not every constriction version has it; a table also states the folded tails explicitly);
``perfect=False`` (constriction's fast deterministic quantisation of the table to the coder's
24-bit precision, which gives every symbol a non-zero probability); the stream is padded to
whole 32-bit words, so a stream costs at most 32 bits more than its ideal length plus the
table-quantisation loss (well under a percent for tables with no tiny bins).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["RangeCoder", "decode_range", "fit_logistic", "ideal_bits", "logistic_pmf"]

_MAX_SYMBOLS = 1 << 20


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def logistic_pmf(loc: float, scale: float, lo: int, hi: int) -> np.ndarray:
    """The discretised logistic table over ``lo..hi`` (tails folded into the end bins).

    Args:
        loc: Location (cast to float32 first, as it is stored).
        scale: Scale, > 0 (cast to float32 first).
        lo: Smallest integer of the support.
        hi: Largest integer of the support (``>= lo``).

    Returns:
        float64 array of ``hi - lo + 1`` probabilities summing to one.

    Raises:
        ValueError: ``scale`` not positive and finite, ``hi < lo``, or a support over 2**20.
    """
    loc = float(np.float32(loc))
    scale = float(np.float32(scale))
    if not (math.isfinite(scale) and scale > 0) or not math.isfinite(loc):
        raise ValueError(f"scale must be positive and finite (loc finite), got {scale}, {loc}")
    lo, hi = int(lo), int(hi)
    if hi < lo:
        raise ValueError(f"hi ({hi}) must be >= lo ({lo})")
    if hi - lo + 1 > _MAX_SYMBOLS:
        raise ValueError(f"support {lo}..{hi} larger than {_MAX_SYMBOLS} symbols")
    edges = (np.arange(lo, hi + 2, dtype=np.float64) - 0.5 - loc) / scale
    cdf = _sigmoid(edges)
    cdf[0], cdf[-1] = 0.0, 1.0  # fold the tails into the end bins
    pmf = np.diff(cdf)
    pmf = np.maximum(pmf, 1e-12)
    return pmf / pmf.sum()


def ideal_bits(symbols: np.ndarray, pmf: np.ndarray, lo: int) -> float:
    """``Σ −log₂ pmf[x − lo]`` over ``symbols`` (the prior's estimate of the coded size)."""
    index = np.asarray(symbols, dtype=np.int64).ravel() - int(lo)
    if index.size and (index.min() < 0 or index.max() >= len(pmf)):
        raise ValueError("symbols outside the table's support")
    return float(-np.log2(pmf[index]).sum())


def fit_logistic(symbols: np.ndarray) -> tuple[float, float]:
    """Moment-matched logistic ``(loc, scale)`` of integer symbols (scale at least 0.1)."""
    x = np.asarray(symbols, dtype=np.float64).ravel()
    if x.size == 0:
        return 0.0, 1.0
    return float(x.mean()), max(float(x.std()) * math.sqrt(3.0) / math.pi, 0.1)


def _constriction():
    try:
        import constriction
    except ImportError as exc:  # pragma: no cover - the extra is declared
        raise ImportError(
            "entropy coding needs the constriction package: pip install 'sparse-core[coding]'"
        ) from exc
    return constriction


class RangeCoder:
    """Append integer tensors, each under its own table, to one range-coded stream.

    Example:
        >>> coder = RangeCoder()
        >>> coder.encode(ints, logistic_pmf(0.0, 1.5, lo, hi), lo)
        >>> data = coder.finish()          # bytes
        >>> back = decode_range(data, [(pmf, lo, ints.size)])[0]
    """

    def __init__(self) -> None:
        self._encoder = _constriction().stream.queue.RangeEncoder()
        self.estimate_bits = 0.0

    def encode(self, symbols: np.ndarray, pmf: np.ndarray, lo: int) -> None:
        """Encode ``symbols`` (integers within ``lo .. lo + len(pmf) − 1``) under ``pmf``."""
        index = np.asarray(symbols, dtype=np.int64).ravel() - int(lo)
        if index.size == 0:
            return
        if index.min() < 0 or index.max() >= len(pmf):
            raise ValueError("symbols outside the table's support")
        self.estimate_bits += float(-np.log2(pmf[index]).sum())
        model = _constriction().stream.model.Categorical(pmf, perfect=False)
        self._encoder.encode(index.astype(np.int32), model)

    def finish(self) -> bytes:
        """The stream as bytes (little-endian 32-bit words)."""
        words = self._encoder.get_compressed()
        return np.asarray(words, dtype="<u4").tobytes()


def decode_range(data: bytes, tables: Sequence[tuple[np.ndarray, int, int]]) -> list[np.ndarray]:
    """Decode a `RangeCoder` stream: one int64 array per ``(pmf, lo, count)``, in order."""
    if len(data) % 4:
        raise ValueError(f"a range-coded stream is whole 32-bit words, got {len(data)} bytes")
    c = _constriction()
    decoder = c.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    out = []
    for pmf, lo, count in tables:
        if count == 0:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        model = c.stream.model.Categorical(pmf, perfect=False)
        out.append(np.asarray(decoder.decode(model, int(count)), dtype=np.int64) + int(lo))
    return out
