"""Rank variables of torchrun, SLURM and Lightning: who creates the run directory, and --out."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pretrain_helpers import cli, write_config

from medcl.errors import MedclInputError
from medcl.pretrain.launcher import RUN_DIR_VARIABLE, default_run_dir, launch_info

RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS",
                  "SLURM_NODEID", "SLURM_LOCALID", RUN_DIR_VARIABLE)


def torchrun_env(rank: int, nproc: int = 4, nnodes: int = 2) -> dict[str, str]:
    """What torchrun sets for global rank ``rank`` (NODE_RANK is not among them)."""
    return {"RANK": str(rank), "WORLD_SIZE": str(nproc * nnodes), "LOCAL_RANK": str(rank % nproc),
            "GROUP_RANK": str(rank // nproc), "LOCAL_WORLD_SIZE": str(nproc)}


@pytest.mark.parametrize("rank", range(8))
def test_torchrun_first_process_is_global_rank_zero_only(rank):
    info = launch_info(torchrun_env(rank))
    assert (info.launcher, info.global_rank, info.world_size) == ("torchrun", rank, 8)
    assert (info.node_rank, info.local_rank) == (rank // 4, rank % 4)
    # the old guard read LOCAL_RANK and NODE_RANK only: rank 4 (node 1, local 0) passed as first
    assert info.is_first == (rank == 0)


def test_slurm_and_lightning_and_plain_processes():
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_NODEID": "1", "SLURM_LOCALID": "1"}
    assert launch_info(slurm) == launch_info(slurm)  # pure function of the environment
    info = launch_info(slurm)
    assert (info.launcher, info.global_rank, info.world_size, info.is_first) == ("slurm", 5, 8, False)
    assert launch_info({**slurm, "SLURM_PROCID": "0", "SLURM_NODEID": "0", "SLURM_LOCALID": "0"}).is_first
    # an interactive single-task allocation is a plain process
    assert launch_info({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).launcher is None
    child = launch_info({"LOCAL_RANK": "2", "NODE_RANK": "0", "WORLD_SIZE": "4"})
    assert (child.launcher, child.is_first) == ("lightning", False)
    assert not launch_info({"NODE_RANK": "1"}).is_first  # second node's main process
    assert launch_info({}).is_first and launch_info({}).launcher is None
    with pytest.raises(MedclInputError, match="RANK='x'"):
        launch_info({"RANK": "x"})


def test_default_run_dir_is_shared_or_refused():
    assert default_run_dir("cfg", "du", {}).parent == Path("runs")
    with pytest.raises(MedclInputError, match=r"torchrun process 3 of 8.*give --out"):
        default_run_dir("cfg", "du", torchrun_env(3))
    with pytest.raises(MedclInputError, match="slurm process 0 of 2"):
        default_run_dir("cfg", "du", {"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    # Lightning's device processes inherit the folder the first process chose
    inherited = {"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2", RUN_DIR_VARIABLE: "runs/x"}
    assert default_run_dir("cfg", "du", inherited) == Path("runs/x")


def test_cli_under_torchrun_without_out_refuses_and_writes_nothing(synthetic_3d_manifest, tmp_path, monkeypatch,
                                                                  capsys):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, synthetic_3d_manifest, method="du")
    for name, value in torchrun_env(0).items():
        monkeypatch.setenv(name, value)
    assert cli(["pretrain", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "torchrun process 0 of 8" in err and "--out" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_only_global_rank_zero_checks_that_the_run_directory_is_new(synthetic_3d_manifest, tmp_path, monkeypatch,
                                                                    capsys):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config = write_config(tmp_path, synthetic_3d_manifest, method="du")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "config.yaml").write_text("x")
    for name, value in torchrun_env(0).items():
        monkeypatch.setenv(name, value)
    assert cli(["pretrain", "--config", config, "--out", busy]) == 2  # rank 0 refuses a used folder
    assert "exists and is not empty" in capsys.readouterr().err

    import medcl.pretrain.loop as pretrain_module
    from medcl.pretrain.config import load_config

    started = []
    monkeypatch.setattr(pretrain_module, "_run", lambda cfg, run, resuming: started.append(run.path) or run)
    for rank in (4, 5, 1):  # node 1 local 0 (passed the old LOCAL_RANK/NODE_RANK guard), others
        for name, value in torchrun_env(rank).items():
            monkeypatch.setenv(name, value)
        pretrain_module.pretrain(load_config(config), busy)  # finds rank 0's folder: no refusal
    assert started == [busy] * 3
