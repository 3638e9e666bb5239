"""The compute dtype of every fused op: what accumulators, per-entry math and saved tensors use."""
import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 inputs compute in float64; float32, bfloat16 and float16 inputs in float32
    (docs/design.md, "Dtypes")."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def side_dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` precision of the kernels' compute-dtype dots (the per-entry logits, O(S C n)) for inputs of
    ``dtype``: bf16 / fp16 inputs compute them in float32, with TF32 tensor-core products (10 mantissa bits, more
    than the inputs hold); float32 and float64 as ``dot_precision``."""
    return "tf32" if dtype in (torch.bfloat16, torch.float16) else dot_precision(dtype)


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision for operands of ``dtype``: fp32 follows PyTorch's matmul precision ("highest":
    IEEE fp32; "high" / "medium": TF32), the other dtypes are exact products accumulated in fp32 or fp64."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"
