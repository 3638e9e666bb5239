"""Data sets of mn. Shipped and always available: the two-spirals toy (generated)."""
from .spirals import make_spirals

__all__ = ["make_spirals"]
