"""Process group set-up under torchrun: DistributedDataParallel with NCCL on GPUs, gloo on CPUs.

Run as usual (`mn train ...`) for one process; `torchrun --nproc_per_node N -m mn train ...` (or the `mn`
script) for N. torchrun sets RANK, WORLD_SIZE, LOCAL_RANK; without them this is a single process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError


@dataclass
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Only the main process prints and writes files."""
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto": this process's GPU if CUDA is available, else the CPU; otherwise the named device.
    ConfigError naming --device for a name torch does not know or a CUDA device on a machine without CUDA
    (rather than a traceback from deep inside the first .to(device))."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"--device must be 'auto' or a torch device such as 'cpu' or 'cuda', got {name!r}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu (or auto)")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def setup(device: str = "auto") -> Context:
    """Joins the process group when launched by torchrun (WORLD_SIZE > 1), else a one-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world == 1:
        return Context(0, 1, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: Context) -> nn.Module:
    """DDP around the model when there are several processes (gradients averaged across them); batch norm
    statistics are synchronised on GPUs (SyncBatchNorm needs CUDA)."""
    if ctx.world == 1:
        return model
    if ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index])
    return nn.parallel.DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
