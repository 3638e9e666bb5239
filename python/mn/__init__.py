"""mn: Meta-Neighborhoods for PyTorch."""
