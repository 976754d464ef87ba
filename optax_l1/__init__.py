"""optax_l1: L1 (Lasso) regularization and sparse training for JAX and Optax."""

import importlib.metadata

from optax_l1._compact import Compacted as Compacted
from optax_l1._compact import Fold as Fold
from optax_l1._compact import compact as compact
from optax_l1._export import NofM as NofM
from optax_l1._export import n_of_m_matmul as n_of_m_matmul
from optax_l1._export import nbytes as nbytes
from optax_l1._export import pack_n_of_m as pack_n_of_m
from optax_l1._export import to_bcoo as to_bcoo
from optax_l1._freeze import FreezeSupportState as FreezeSupportState
from optax_l1._freeze import freeze_support as freeze_support
from optax_l1._ftrl import FtrlState as FtrlState
from optax_l1._ftrl import ftrl as ftrl
from optax_l1._masks import kernel_mask as kernel_mask
from optax_l1._masks import path_mask as path_mask
from optax_l1._metrics import sparsity as sparsity
from optax_l1._metrics import sparsity_report as sparsity_report
from optax_l1._operators import elastic_net_threshold as elastic_net_threshold
from optax_l1._operators import group_soft_threshold as group_soft_threshold
from optax_l1._operators import n_of_m_projection as n_of_m_projection
from optax_l1._operators import soft_threshold as soft_threshold
from optax_l1._penalty import group_l1_penalty as group_l1_penalty
from optax_l1._penalty import l1_penalty as l1_penalty
from optax_l1._preconditioned import PreconditionedL1State as PreconditionedL1State
from optax_l1._preconditioned import ProximalAdagradState as ProximalAdagradState
from optax_l1._preconditioned import ProximalAdamState as ProximalAdamState
from optax_l1._preconditioned import proximal_adagrad as proximal_adagrad
from optax_l1._preconditioned import proximal_adam as proximal_adam
from optax_l1._preconditioned import proximal_adamw as proximal_adamw
from optax_l1._preconditioned import with_preconditioned_l1 as with_preconditioned_l1
from optax_l1._spectral import nuclear_threshold as nuclear_threshold
from optax_l1._spectral import rank_projection as rank_projection
from optax_l1._structures import Blocks as Blocks
from optax_l1._structures import Elements as Elements
from optax_l1._structures import Groups as Groups
from optax_l1._structures import Heads as Heads
from optax_l1._structures import Structure as Structure
from optax_l1._structures import path_structure as path_structure
from optax_l1._suggest import suggest_strength as suggest_strength
from optax_l1._target import SparsityTargetState as SparsityTargetState
from optax_l1._target import drop_latent as drop_latent
from optax_l1._target import sparsity_target as sparsity_target
from optax_l1._transforms import AddL1SubgradientState as AddL1SubgradientState
from optax_l1._transforms import GroupL1ProxState as GroupL1ProxState
from optax_l1._transforms import L1ProxState as L1ProxState
from optax_l1._transforms import ProximalState as ProximalState
from optax_l1._transforms import add_l1_subgradient as add_l1_subgradient
from optax_l1._transforms import chain_l1_prox as chain_l1_prox
from optax_l1._transforms import group_l1_prox as group_l1_prox
from optax_l1._transforms import l1_prox as l1_prox
from optax_l1._transforms import proximal as proximal

try:
    __version__ = importlib.metadata.version("optax_l1")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = (
    "Blocks",
    "Elements",
    "Groups",
    "Heads",
    "Structure",
    "AddL1SubgradientState",
    "Compacted",
    "Fold",
    "FreezeSupportState",
    "FtrlState",
    "GroupL1ProxState",
    "L1ProxState",
    "NofM",
    "PreconditionedL1State",
    "ProximalAdagradState",
    "ProximalAdamState",
    "ProximalState",
    "SparsityTargetState",
    "add_l1_subgradient",
    "chain_l1_prox",
    "compact",
    "drop_latent",
    "elastic_net_threshold",
    "freeze_support",
    "ftrl",
    "group_l1_penalty",
    "group_l1_prox",
    "group_soft_threshold",
    "kernel_mask",
    "l1_penalty",
    "l1_prox",
    "n_of_m_matmul",
    "n_of_m_projection",
    "nuclear_threshold",
    "nbytes",
    "pack_n_of_m",
    "path_mask",
    "path_structure",
    "proximal",
    "proximal_adagrad",
    "proximal_adam",
    "proximal_adamw",
    "rank_projection",
    "soft_threshold",
    "sparsity",
    "sparsity_report",
    "sparsity_target",
    "suggest_strength",
    "to_bcoo",
    "with_preconditioned_l1",
)
