"""Pretraining a comparison's runs side by side: ``jobs`` worker processes, the cores split between them.

A comparison is many short, independent runs. On a CPU a small encoder does not use two cores
well (a ResNet-10 step on 32² images: 41 ms on one thread, 37 ms on two), so two runs on one
thread each finish ~1.8x sooner than one after the other on two threads (``bench/parallel_runs.py``).
Each worker is a fresh (spawned) process that trains with ``cores // jobs`` threads; the parent
probes finished runs meanwhile with one thread, so the cores stay shared evenly.

Results do not depend on ``jobs`` beyond the float path: a run trains with the same config and
seed in either case, but the thread count changes the order of float reductions, as a change of
CPU does (docs/reproducibility.md measures both).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

AUTO_MAX_JOBS = 8
"""``jobs="auto"`` never starts more workers than this (each holds its own copy of torch and the data)."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or a Slurm job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_jobs(jobs: int | str, *, runs: int, gpu: bool) -> int:
    """Worker processes for ``runs`` pretraining runs: ``auto`` is one per core (at most
    :data:`AUTO_MAX_JOBS`) on a CPU and 1 when the runs train on a GPU (they would share its memory)."""
    if jobs == "auto":
        jobs = 1 if gpu else min(available_cores(), AUTO_MAX_JOBS)
    return max(1, min(int(jobs), max(runs, 1)))


def threads_per_job(jobs: int) -> int:
    """Torch threads of each worker: the cores split evenly, at least one."""
    return max(1, available_cores() // max(jobs, 1))


def _start_worker(threads: int) -> None:
    import torch

    import medcl.data._monai_readers  # noqa: F401  (its warning filters, set outside any catch_warnings block)

    torch.set_num_threads(threads)


@contextlib.contextmanager
def _parent_threads(threads: int) -> Iterator[None]:
    """Torch and BLAS threads of this (the probing) process, for the duration of the block."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def run_side_by_side(
    items: Iterable[Item],
    work: Callable[[Item], Outcome],
    *,
    jobs: int,
    local: Callable[[Item], bool] = lambda _item: False,
) -> Iterator[tuple[Item, Outcome]]:
    """Yield ``(item, work(item))`` for every item, as they finish.

    ``jobs`` 1: in this process, in order. Otherwise ``work`` (a module-level function: it is
    pickled) runs in ``jobs`` spawned workers, except for items where ``local(item)`` is true (cheap
    ones: a finished run to reuse), which run here first. The caller's loop body runs while the workers
    train, with this process on one thread. An error in a worker is raised here once the runs already
    started have stopped; the runs not started are cancelled.
    """
    items = list(items)
    if jobs <= 1:
        for item in items:
            yield item, work(item)
        return
    here = [item for item in items if local(item)]
    there = [item for item in items if not local(item)]
    for item in here:
        yield item, work(item)
    if not there:
        return
    context = multiprocessing.get_context("spawn")  # a fork of a process holding torch threads can hang
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_start_worker,
                               initargs=(threads_per_job(jobs),))
    try:
        with _parent_threads(1):
            pending: dict[Future[Any], Item] = {pool.submit(work, item): item for item in there}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in [f for f in pending if f in done]:  # submission order among the finished
                    item = pending.pop(future)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        raise RuntimeError(
                            f"a worker process of the {jobs} side-by-side runs died (out of memory? killed?); "
                            "finished runs are kept: rerun with fewer --jobs to go on") from None
                    yield item, outcome
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
