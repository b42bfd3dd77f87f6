"""
``launch`` for GPU and CPU workers, with detectron2's flags (``--num-gpus``,
``--num-machines``, ``--machine-rank``, ``--dist-url``).

detectron2's own ``launch`` spawns one NCCL process per GPU and requires CUDA. Offline
jobs such as the region precompute are as useful on CPU workers, so this launcher uses
detectron2's on CUDA and otherwise spawns the same number of processes joined by a gloo
process group, setting up ``detectron2.utils.comm`` (ranks, local group, barriers)
exactly as detectron2 does.
"""

import logging
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

__all__ = ["launch"]


def launch(
    main_func,
    num_workers_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = None,
    args=(),
    device: str = "cuda",
    timeout: timedelta = timedelta(minutes=30),
):
    """
    Run ``main_func(*args)`` in ``num_workers_per_machine`` processes on each machine.

    Args:
        device: "cuda" -> detectron2's launch (one NCCL process per GPU); "cpu" -> gloo
            processes, ``num_workers_per_machine`` of them (the ``--num-gpus`` flag).
        timeout: of the process group's collectives (e.g. the final barrier of a job
            whose workers finish at different times).
    """
    if str(device).startswith("cuda"):
        return d2_launch(
            main_func,
            num_workers_per_machine,
            num_machines,
            machine_rank,
            dist_url,
            args=args,
            timeout=timeout,
        )
    world_size = num_machines * num_workers_per_machine
    if world_size == 1:
        return main_func(*args)
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("--dist-url auto only works on one machine")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.spawn(
        _cpu_worker,
        nprocs=num_workers_per_machine,
        args=(
            main_func,
            world_size,
            num_workers_per_machine,
            machine_rank,
            dist_url,
            args,
            timeout,
        ),
        daemon=False,
    )


def _cpu_worker(
    local_rank, main_func, world_size, per_machine, machine_rank, dist_url, args, timeout
):
    rank = machine_rank * per_machine + local_rank
    try:
        dist.init_process_group(
            "gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout
        )
    except Exception:
        logging.getLogger(__name__).error(f"process group URL: {dist_url}")
        raise
    for m in range(world_size // per_machine):
        group = dist.new_group(list(range(m * per_machine, (m + 1) * per_machine)))
        if m == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    # Workers share the machine's cores; without this each would start one thread per core.
    torch.set_num_threads(max(1, torch.get_num_threads() // per_machine))
    comm.synchronize()
    try:
        main_func(*args)
        # every rank done before the group goes away: a rank that destroyed it while another
        # was still finishing aborted in gloo ("terminate called without an active exception")
        comm.synchronize()
    finally:
        dist.destroy_process_group()
