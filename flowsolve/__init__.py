"""flowsolve: symbolic-numeric solver for the learning dynamics of neural networks.

The public API, one verb per capability. See README.md and docs/.
"""

import importlib
import importlib.metadata
from typing import TYPE_CHECKING

from . import plot as plot
from ._compile_cache import enable_compilation_cache as enable_compilation_cache
from ._fit import fit_effective_rates as fit_effective_rates, FitResult as FitResult
from ._kernels import (
    EffectiveRates as EffectiveRates,
    predict_effective_rates as predict_effective_rates,
    RatesObserver as RatesObserver,
)
from ._ensemble import ensemble_flow as ensemble_flow
from ._flow import (
    FlowSolution as FlowSolution,
    gradient_descent as gradient_descent,
    gradient_flow as gradient_flow,
    Minibatches as Minibatches,
    mse_loss as mse_loss,
    TwoPointObserver as TwoPointObserver,
)
from ._network import fit_network as fit_network, NetworkFit as NetworkFit
from ._observables import (
    pair_distances as pair_distances,
    pairwise_observables as pairwise_observables,
    PairwiseObservables as PairwiseObservables,
    predict_distances as predict_distances,
    two_point_observables as two_point_observables,
    TwoPointObservables as TwoPointObservables,
)
from . import _renamed
from ._results import result_name as result_name, RESULTS as RESULTS
from ._rkc import RKC as RKC
from ._sweep import StoreWarning as StoreWarning, sweep as sweep
from ._gram import (
    GramModel as GramModel,
    GramSolution as GramSolution,
    predict_gram_model as predict_gram_model,
    solve_gram as solve_gram,
)
from ._unaligned import (
    solve_unaligned as solve_unaligned,
    unaligned_fixed_point as unaligned_fixed_point,
    UnalignedSolution as UnalignedSolution,
)
from ._tangent import tangent_model as tangent_model, TangentModel as TangentModel
from ._theory import (
    EffectiveTheory as EffectiveTheory,
    from_regular as from_regular,
    solve_theory as solve_theory,
    solve_theory_batch as solve_theory_batch,
    TheorySolution as TheorySolution,
    to_regular as to_regular,
)

if TYPE_CHECKING:
    from . import alternatives as alternatives, experiments as experiments, symbolic as symbolic

_SUBMODULES = ("alternatives", "experiments", "symbolic")


def __getattr__(name: str):
    # Imported on first use: sympy (symbolic) and the architectures (experiments) cost a fresh process
    # a quarter of a second that a solve or a fit does not need.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _renamed.RENAMED_ATTRIBUTES:
        raise _renamed.renamed_attribute(name)
    raise AttributeError(f"module 'flowsolve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])


try:
    __version__ = importlib.metadata.version("flowsolve")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"
