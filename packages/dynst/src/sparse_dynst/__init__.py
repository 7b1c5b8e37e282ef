"""DynST (Wu et al., KDD): dynamic sparse training over the sensors of spatio-temporal
forecasting, on sparsecore.

Public API:

* `DynST` / `DynSTConfig`: the method (entry point ``dynst``);
* `SensorGate`, `stream_morph`, `dimension_map`: the model-agnostic input
  wrapper holding one spatial sensor mask for every timestamp and channel;
* `advection_diffusion_grid`, `diffusion_graph`, `SpatioTemporalData`: seeded
  synthetic data with a known block of noise sensors;
* `GridConvForecaster`, `GraphForecaster`: small reference forecasters.
"""

from sparse_dynst.config import DynSTConfig
from sparse_dynst.data import SpatioTemporalData, advection_diffusion_grid, diffusion_graph
from sparse_dynst.gate import SensorGate, dimension_map, stream_morph
from sparse_dynst.method import DynST
from sparse_dynst.models import GraphForecaster, GridConvForecaster

__version__ = "0.1.0"

__all__ = [
    "DynST",
    "DynSTConfig",
    "GraphForecaster",
    "GridConvForecaster",
    "SensorGate",
    "SpatioTemporalData",
    "__version__",
    "advection_diffusion_grid",
    "diffusion_graph",
    "dimension_map",
    "stream_morph",
]
