"""Which process of a multi-process launch this is, read from the launcher's environment.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``GROUP_RANK`` (the node);
SLURM's srun sets ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_NODEID`` and ``SLURM_LOCALID``;
Lightning's own per-device processes (``devices: 4`` started without a launcher) get
``LOCAL_RANK`` / ``NODE_RANK`` / ``WORLD_SIZE``. A plain ``medcl pretrain`` has none of them.
:func:`check_accelerator` says, before Lightning starts, whether this machine has the devices the
config asks for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from medcl.errors import MedclInputError

#: Set by a first process that chose the default run directory, so that the per-device
#: processes Lightning starts afterwards (same command line, inherited environment) use it too.
RUN_DIR_VARIABLE = "MEDCL_RUN_DIR"


@dataclass(frozen=True)
class LaunchInfo:
    """This process's place in a launch.

    ``global_rank`` is None where the launcher does not say it (Lightning's per-device
    processes only know their node and local rank); ``launcher`` is "torchrun", "slurm",
    "lightning" or None (a single plain process).
    """

    global_rank: int | None
    node_rank: int
    local_rank: int
    world_size: int
    launcher: str | None

    @property
    def is_first(self) -> bool:
        """True for the one process that creates the run directory (global rank 0)."""
        if self.global_rank is not None:
            return self.global_rank == 0
        return self.node_rank == 0 and self.local_rank == 0

    def describe(self) -> str:
        """E.g. ``torchrun process 3 of 8 (node 1)``."""
        rank = self.global_rank if self.global_rank is not None else f"{self.local_rank} on node {self.node_rank}"
        return f"{self.launcher} process {rank} of {self.world_size}"


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise MedclInputError(f"environment variable {name}={value!r}: expected an integer") from None


def launch_info(env: Mapping[str, str] | None = None) -> LaunchInfo:
    """Read the rank variables of torchrun, SLURM or Lightning from ``env`` (default os.environ).

    Raises MedclInputError when one of them is not an integer.
    """
    env = os.environ if env is None else env
    world = _int(env, "WORLD_SIZE") or 1
    if (rank := _int(env, "RANK")) is not None:  # torchrun / torch.distributed.launch
        return LaunchInfo(rank, _int(env, "GROUP_RANK") or 0, _int(env, "LOCAL_RANK") or 0, world, "torchrun")
    tasks = _int(env, "SLURM_NTASKS") or 1
    if (rank := _int(env, "SLURM_PROCID")) is not None and tasks > 1:
        return LaunchInfo(rank, _int(env, "SLURM_NODEID") or 0, _int(env, "SLURM_LOCALID") or 0, tasks, "slurm")
    local, node = _int(env, "LOCAL_RANK"), _int(env, "NODE_RANK")
    if local is not None or node is not None:  # Lightning's processes, or a hand-set node rank
        return LaunchInfo(None, node or 0, local or 0, world, "lightning")
    return LaunchInfo(0, 0, 0, 1, None)


def default_run_dir(stem: str, method: str, env: Mapping[str, str] | None = None) -> Path:
    """``runs/<stem>-<method>-<time>`` for a run started without ``--out``.

    Every process of one launch must write into the same folder; a timestamp taken on each
    process would differ. Processes that Lightning starts for its devices inherit the folder
    the first one chose (:data:`RUN_DIR_VARIABLE`); under torchrun or SLURM with several
    processes there is no such hand-over, so ``--out`` is required. Raises MedclInputError then.
    """
    import time

    env = os.environ if env is None else env
    chosen = env.get(RUN_DIR_VARIABLE)
    if chosen:
        return Path(chosen)
    info = launch_info(env)
    if info.world_size > 1 or info.launcher == "lightning":
        raise MedclInputError(
            f"this is {info.describe()}: give --out RUN_DIR "
            "(the same path on every node, on a shared file system) so that all processes write one run directory"
        )
    return Path("runs") / f"{stem}-{method}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_accelerator(accelerator: str, devices: int | str | list[int]) -> None:
    """Refuse a device setting this machine cannot run, naming the keys to change.

    A GPU run without (enough) CUDA GPUs, or GPU indices on the CPU: Lightning would stop later
    with a MisconfigurationException; this says what to set instead. Raises MedclInputError.
    """
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    accelerator = str(accelerator).lower()
    if accelerator in ("gpu", "cuda") and available == 0:
        raise MedclInputError(
            f"accelerator: {accelerator}, but torch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False). On a CPU machine set "
            "accelerator: cpu (or auto) and precision: \"32\" in the config, or add "
            "--set accelerator=cpu --set precision=32 --set devices=1; on a GPU machine install a CUDA "
            "build of torch (README, `make install PIP_INDEX=...`)"
        )
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and available > 0)
    if isinstance(devices, list) and not on_gpu:
        raise MedclInputError(f"devices: {devices} lists GPU indices, but this run is on the CPU "
                              f"(accelerator: {accelerator}); set devices to a count (--set devices=1)")
    wanted = max(devices) + 1 if isinstance(devices, list) else devices
    if on_gpu and isinstance(wanted, int) and wanted > available:
        raise MedclInputError(
            f"devices: {devices} needs {wanted} GPUs per node, but this machine has {available}; "
            f"set devices (e.g. --set devices={available})"
        )
