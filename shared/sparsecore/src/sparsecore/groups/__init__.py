"""Channel dependency groups: what must be pruned together so that removal is exact.

* `channel_groups`: trace a model (Torch-Pruning's ``DependencyGraph``) into
  `ChannelGroups`: per group the producers' output rows and biases, the normalisations'
  weights and biases, and the consumers' input slices, through residual sums, concatenations and
  flattens.
* `group_scores` (L1 / L2 magnitude, Taylor, BN-γ, FPGM), `aggregate` (from any
  element scores) and `select_channels` (per group or global, exact counts).
* `group_masks`, `prune_channel_groups` and `ChannelGroupsSupport`: masking
  whole groups, and the rule by which the core baselines use them (``pattern="channel"`` plus
  ``input_shape``).

See ``docs/export.md`` ("Channel groups") for a guide with measured numbers.
"""

from sparsecore.groups.graph import (
    MASKED_ROLES,
    ROLES,
    ChannelGroup,
    ChannelGroups,
    GroupSlice,
    channel_groups,
)
from sparsecore.groups.masking import (
    ChannelGroupsSupport,
    active_channels,
    group_masks,
    prune_channel_groups,
)
from sparsecore.groups.scores import (
    CRITERIA,
    SCORED_ROLES,
    aggregate,
    group_scores,
    kept_channels,
    select_channels,
)

__all__ = [
    "CRITERIA",
    "MASKED_ROLES",
    "ROLES",
    "SCORED_ROLES",
    "ChannelGroup",
    "ChannelGroups",
    "ChannelGroupsSupport",
    "GroupSlice",
    "active_channels",
    "aggregate",
    "channel_groups",
    "group_masks",
    "group_scores",
    "kept_channels",
    "prune_channel_groups",
    "select_channels",
]
