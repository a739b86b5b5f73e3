"""Every loss under a 2-rank gloo group equals the single-process loss on the global batch.

Convention (medcl.losses.distributed): the loss value on each rank is the global-batch loss,
and the gradient reaching a rank's shard is world_size times the global gradient of that shard,
so that DDP's gradient *averaging* gives exactly the single-process gradient. Checked both on
the shards and on the parameters of a shared projector whose gradients are averaged like DDP.
All losses run in ONE spawned group (a group takes seconds to start).
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medcl.errors import MedclInputError
from medcl.kernels import KernelTerm, PriorKernel
from medcl.losses import METHODS, build_loss
from medcl.losses.distributed import all_gather_no_grad, all_gather_with_grad, is_distributed, world_size

WORLD = 2
SHARDS = (5, 4)  # uneven on purpose: the gather pads and unpads
N, V, D, P = sum(SHARDS), 3, 6, 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, V, 4, generator=g, dtype=torch.float64)
    attributes = torch.stack(
        [
            torch.randn(N, generator=g, dtype=torch.float64) * 10 + 50,
            torch.randint(0, 2, (N,), generator=g).double(),
        ],
        dim=1,
    )
    missing = torch.zeros(N, P, dtype=torch.bool)
    missing[[1, 6], 0] = True
    missing[7, 1] = True
    attributes[missing] = float("nan")
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    return x, attributes, missing, labels


def _options(method: str, attributes, missing) -> dict:
    if method == "kernel_du":
        kernel = PriorKernel([KernelTerm("age", "rbf", 0, 1), KernelTerm("sex", "delta", 1, 2)])
        return {"kernel": kernel.fit(attributes, missing)}
    if method == "y_aware":
        return {"sigma": 5.0}
    if method == "supervised":  # the projector's D outputs are the logits of D classes
        return {"classes": D}
    return {}


def _projector() -> torch.nn.Linear:
    torch.manual_seed(1)
    return torch.nn.Linear(4, D, dtype=torch.float64)


def _worker(rank: int, port: int, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        assert is_distributed() and world_size() == WORLD
        x, attributes, missing, labels = _batch()
        lo = sum(SHARDS[:rank])
        shard = slice(lo, lo + SHARDS[rank])
        # plain gathers: rank order, padding removed, bool kept
        ids = torch.arange(lo, lo + SHARDS[rank], dtype=torch.float64).requires_grad_()
        gathered = all_gather_with_grad(ids)
        assert torch.equal(gathered.detach(), torch.arange(N, dtype=torch.float64))
        assert torch.equal(all_gather_no_grad(missing[shard]), missing)
        failures = []
        for method in METHODS:
            options = _options(method, attributes, missing)
            # single process, whole batch
            head = _projector()
            z_all = head(x).detach().requires_grad_()
            single = build_loss(method, **options)(z_all, attributes, missing, labels)
            single.backward()
            head_single = _projector()
            build_loss(method, **options)(head_single(x), attributes, missing, labels).backward()
            # this rank's shard, gathered
            z_local = head(x[shard]).detach().requires_grad_()
            loss = build_loss(method, gather=True, **options)(z_local, attributes[shard], missing[shard], labels[shard])
            loss.backward()
            head_ddp = _projector()
            build_loss(method, gather=True, **options)(
                head_ddp(x[shard]), attributes[shard], missing[shard], labels[shard]
            ).backward()
            for p in head_ddp.parameters():  # what DDP does: average over ranks
                dist.all_reduce(p.grad)
                p.grad /= WORLD
            checks = {
                "value": torch.allclose(loss.detach(), single.detach(), atol=1e-10),
                "shard_grad": torch.allclose(z_local.grad / WORLD, z_all.grad[shard], atol=1e-10),
                "ddp_param_grad": all(
                    torch.allclose(a.grad, b.grad, atol=1e-10)
                    for a, b in zip(head_ddp.parameters(), head_single.parameters(), strict=True)
                ),
            }
            failures += [f"{method}: {name}" for name, ok in checks.items() if not ok]
        # one subject per rank: the global batch (2 subjects) is what the n >= 2 check sees
        for method in ("du", "kernel_du"):
            options = _options(method, attributes, missing)
            z_pair = _projector()(x[:2]).detach()
            single = build_loss(method, **options)(z_pair, attributes[:2], missing[:2])
            try:
                one = build_loss(method, gather=True, **options)(z_pair[rank : rank + 1], attributes[rank : rank + 1],
                                                                 missing[rank : rank + 1])
                if not torch.allclose(one, single, atol=1e-10):
                    failures.append(f"{method}: one subject per rank gives {one.item()} != {single.item()}")
            except Exception as err:  # report it to the parent process
                failures.append(f"{method}: one subject per rank refused: {err}")
        results[rank] = failures
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_gathered_losses_match_single_process_on_global_batch():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(_free_port(), results), nprocs=WORLD, join=True)
        results = dict(results)
    assert sorted(results) == [0, 1]
    assert results[0] == [] and results[1] == [], results


@pytest.mark.parametrize("method", ["du", "kernel_du"])
def test_one_subject_is_refused_when_the_global_batch_has_one(method):
    x, attributes, missing, _ = _batch()
    loss = build_loss(method, gather=True, **_options(method, attributes, missing))
    with pytest.raises(MedclInputError, match=r"z( \(global batch\))?: expected at least 2 subjects.*n = 1"):
        loss(_projector()(x[:1]), attributes[:1], missing[:1])  # no process group: the global batch is 1


def test_gather_is_identity_without_process_group():
    z = torch.randn(3, 2, 4, requires_grad=True)
    assert not is_distributed() and world_size() == 1
    assert all_gather_with_grad(z) is z
    assert all_gather_no_grad(z) is z
