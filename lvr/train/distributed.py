"""Devices and processes: the device a run asks for, and the torchrun process group.

A plain ``python script.py`` is one process and starts no group; under torchrun each process
joins it and these helpers gather results across ranks.
"""
import os

import torch
import torch.distributed as dist

from lvr.errors import UserError


def resolve_device(name):
    """'auto' -> CUDA when available, else CPU; anything else as torch understands it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"DEVICE={name!r} but no CUDA GPU is available; use --device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"DEVICE={name!r} is not a device torch knows (auto, cpu, cuda, cuda:1)") \
            from None


def distributed_setup(device_name):
    """Join the process group when launched by torchrun; returns (rank, world_size, device).

    gloo on CPU, NCCL on CUDA; each process uses the GPU of its LOCAL_RANK. A plain
    ``python script.py`` is one process and starts no group.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world_size == 1:
        return 0, 1, device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device


def gathered(tensor, world_size):
    """Concatenate each rank's tensor in rank order (identity in one process)."""
    if world_size == 1:
        return tensor
    parts = [None] * world_size
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def barrier(world_size):
    if world_size > 1:
        dist.barrier()


def quiet_log(*_):
    """The log of a process other than rank 0: only rank 0 prints."""
