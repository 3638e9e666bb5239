"""Triton kernels of mn and their thin launchers: tensors in, tensors out (no autograd, no nn)."""
