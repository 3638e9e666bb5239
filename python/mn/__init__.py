"""mn: Meta-Neighborhoods for PyTorch (Shan & Oliva, NeurIPS 2020).

Functional ops:  inner_gradient, adapted_weights, adapted_logits       (functional.py)
Layers:          MetaNeighborhoodsHead, CosineClassifier, DotClassifier,
                 MetaNeighborhoodsClassifier                           (layers.py)
                 MetaNeighborhoods (any output network f_phi)          (generic.py)
Backends:        available_backends, resolve_backend                   (backends.py)
Checks:          set_value_checks (argument value checks on/off)       (_validate.py)
Memory:          set_torch_memory_budget (the `torch` backend's chunks) (reference/closed_form.py)
Analysis:        mn.analysis (interpretability helpers; the paper's figures: `mn analyze`)
"""
from . import analysis
from ._validate import set_value_checks
from ._version import __version__ as __version__  # the installed distribution's version (importlib.metadata)
from .backends import available_backends, resolve_backend
from .functional import adapted_logits, adapted_weights, inner_gradient
from .generic import MetaNeighborhoods
from .layers import (
    ClassifierOutput,
    CosineClassifier,
    DotClassifier,
    MetaNeighborhoodsClassifier,
    MetaNeighborhoodsHead,
)
from .reference.closed_form import set_memory_budget as set_torch_memory_budget

__all__ = [
    "analysis", "inner_gradient", "adapted_weights", "adapted_logits", "available_backends", "resolve_backend",
    "MetaNeighborhoodsHead", "CosineClassifier", "DotClassifier", "MetaNeighborhoodsClassifier", "ClassifierOutput",
    "MetaNeighborhoods", "set_value_checks", "set_torch_memory_budget",
]
