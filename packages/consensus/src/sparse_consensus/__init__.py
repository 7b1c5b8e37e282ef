"""sparse-consensus: a consensus sub-network with polarization regularization, in one pass.

Paper: Xiaoying Zhi, Varun Babbar, Rundong Liu, Pheobe Sun, Fran Silavong, Ruibo Shi, Sean Moran,
"Learning a Consensus Sub-Network with Polarization Regularization and One Pass Training",
arXiv 2302.10798 (v1: "A New Baseline for GreenAI: Finding the Optimal Sub-Network via Layer and
Channel Pruning"). No official code is public (Papers-with-Code lists none).

What could be confirmed, and what not. Only the abstract (all versions), the v1 abstract and
third-party summaries could be read here; the paper body (formulas, hyper-parameters) could not.
Labels: [paper] = stated in the abstract / summaries; [recon] = reconstructed (the team digest's
reading, not confirmed against the paper text); CHOICE = ours.

* [paper] A binary gating module, lightweight, differentiable (v1: "lightweight, differentiable,
  and binarized") and a polarizing loss uncover a static sub-network with user-defined sparsity
  in one training run; the gating modules are not needed at inference; layer pruning and channel
  pruning on ResNets; a straight-through estimator trains the binary gates; "removes 50% of
  connections with < 1% accuracy drop" (CIFAR), "lower drop than other pruning at equal cost".
* [recon] The gate is input-conditioned: ``GAP → FC → ReLU → FC → logit``; forward
  ``1[logit > 0]``, backward the sigmoid's derivative (`binary_gate`).
* [recon] Loss ``L_task + λ_s (d(ḡ) − (1 − s))² + λ_p R_pol(ḡ)`` with ``ḡ`` the batch means of
  the gates; the squared gap to the target and both polarizer forms (``ḡ(1−ḡ)``, Zhuang et al.'s
  ``t‖ḡ‖₁ − ‖ḡ − mean ḡ‖₁``) are reconstructions (`sparse_consensus.regularizers`).
* [recon] Gates whose training-set average is below 0.5 are removed statically.
* CHOICE: ``d(ḡ)`` is the FLOPs density the gates imply (``budget="flops"``; ``"gates"``: the
  plain gate mean), so the target is a FLOPs fraction.
* CHOICE: a gated block computes ``g · block(x) + (1 − g) · x`` (the whole block, its final ReLU
  included, is skipped at ``g = 0``); only blocks whose output keeps the input's shape are gated
  (down-sampling blocks are not, as in SkipNet / ConvNet-AIG). With post-ReLU inputs this equals
  the digest's ``x + g F(x)`` at ``g ∈ {0, 1}``.
* CHOICE: channel gates sit on channel groups with a single producer (inside residual blocks),
  read the producer's input and multiply the output of its BatchNorm; residual-stream channels
  (coupled across blocks) are not channel-gated.
* CHOICE: the gate nets' hidden width is 16 and the last bias starts at +3 (every gate open:
  training starts as the dense network).
* CHOICE: the running ``average`` of each gate is an EMA (momentum 0.1) of its training batch
  means; `measure_gates` replaces it with the exact average over the training set (in eval mode)
  before the static model is extracted, which is what the reproduction does.
"""

from sparse_consensus.gates import (
    GATES_ATTRIBUTE,
    BlockGate,
    ChannelGate,
    ConsensusGates,
    GateNet,
    attach_gates,
    binary_gate,
    detach_gates,
    find_gates,
)
from sparse_consensus.method import BUDGETS, ConsensusConfig, ConsensusPruning
from sparse_consensus.models import gated_resnet, resnet_gate_names
from sparse_consensus.regularizers import (
    POLARIZERS,
    polarization,
    register_polarizer,
    variance_polarizer,
)
from sparse_consensus.subnetwork import (
    GateStatistics,
    accuracy,
    consensus_subnetwork,
    measure_gates,
)

__version__ = "0.1.0"

__all__ = [
    "BUDGETS",
    "GATES_ATTRIBUTE",
    "POLARIZERS",
    "BlockGate",
    "ChannelGate",
    "ConsensusConfig",
    "ConsensusGates",
    "ConsensusPruning",
    "GateNet",
    "GateStatistics",
    "__version__",
    "accuracy",
    "attach_gates",
    "binary_gate",
    "consensus_subnetwork",
    "detach_gates",
    "find_gates",
    "gated_resnet",
    "measure_gates",
    "polarization",
    "register_polarizer",
    "resnet_gate_names",
    "variance_polarizer",
]
