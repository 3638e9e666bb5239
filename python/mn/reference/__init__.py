"""Pure-PyTorch references of the ops (never import kernels).

autograd.py     paper-literal: B x S x C logits and torch.autograd.grad(create_graph=True); ground truth, small sizes.
closed_form.py  closed form (docs/design.md, "Forward"), chunked over the dictionary; memory O(B·C·n + chunk·C·n).
"""
from .autograd import inner_gradient_autograd
from .closed_form import inner_gradient_torch

__all__ = ["inner_gradient_autograd", "inner_gradient_torch"]
