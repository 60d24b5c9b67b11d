"""Fine-tuning with DistributedDataParallel under torchrun: two gloo processes on the CPU train the tiny
model into one valid model version (only rank 0 writes it)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from db.coco_import import import_coco
from db.schema import Job, ModelVersion
from model.data import AspectBatches
from tests.stores import cli_args

pytestmark = pytest.mark.model_only  # not in the PostgreSQL pass: a model's data, tested elsewhere on it

ROOT = Path(__file__).resolve().parents[2]


def test_each_process_gets_a_disjoint_share_with_as_many_batches():
    samples = [type("S", (), {"width": 10 + (k % 3 == 0) * 20, "height": 20})() for k in range(23)]
    shares = []
    for rank in range(2):
        ds = list(range(len(samples)))
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
        b = AspectBatches(samples, 4, torch.Generator().manual_seed(0), drop_last=True, order=sampler)
        epoch = list(b)
        assert len(epoch) == len(b) == 3 and all(len(x) == 4 for x in epoch)
        shares.append({i for batch in epoch for i in batch})
        assert list(b) != epoch  # the next epoch is another order
    assert shares[0] | shares[1] == set(range(23))  # every image, each in one share but the one index
    assert len(shares[0] & shares[1]) <= 1  # DistributedSampler repeats to even the shares out (23 -> 24)


@pytest.mark.slow
def test_torchrun_with_two_gloo_processes_trains_one_valid_version(store, synth_dir):
    from model.build import verify_checkpoint

    import_coco(store, synth_dir / "annotations.json", synth_dir)
    store.engine.dispose()
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                        str(ROOT / "app.py"), *cli_args(store.settings), "train", "--size", "tiny",
                        "--epochs", "2", "--device", "cpu"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("version 1:") == 1  # rank 0 reports; rank 1 says nothing
    with store.session() as s:
        versions = s.scalars(select(ModelVersion)).all()
        jobs = s.scalars(select(Job)).all()
    assert len(versions) == 1 and versions[0].is_active and len(jobs) == 1 and jobs[0].state == "done"
    assert len(versions[0].loss_curve) >= 2
    from model.data import store_category_map

    verify_checkpoint(store.settings.models_dir / versions[0].checkpoint, store_category_map(store))  # it loads


# --- what several processes agree on (gloo on the CPU, two processes, a toy model under DDP) -----------------
# Each scenario injects one fault on one process; the processes must end together (raising, or returning),
# never wait in a collective for a process that stopped. A process group's timeout of a few seconds makes a
# wait that would hang fail the test instead.

ITERS = 6


class _Toy(torch.nn.Module):
    """A model with torchvision's training interface (images, targets -> loss dict) and one parameter; it
    can give a NaN loss or raise at its ``at``-th forward pass."""

    def __init__(self, fault: str | None = None, at: int = 3):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))
        self.fault, self.at, self.calls = fault, at, 0

    def forward(self, images, targets):
        self.calls += 1
        if self.calls == self.at and self.fault == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        x = torch.stack([i.mean((1, 2)) for i in images]).mean(0)
        loss = ((x * self.w) ** 2).sum()
        if self.calls == self.at and self.fault == "nan":
            loss = loss * float("nan")
        return {"loss_a": loss}


class _Loader:
    """Batches of one uint8 image; with ``fail_at``, loading that batch raises."""

    def __init__(self, fail_at: int | None = None):
        self.fail_at = fail_at

    def __len__(self):
        return 4

    def __iter__(self):
        for k in range(4):
            if k + 1 == self.fail_at:
                raise RuntimeError("disk gone")
            yield [torch.full((3, 4, 4), 10 * k + 5, dtype=torch.uint8)], [{"image_id": torch.tensor(k)}]


def _scenario(name: str, rank: int, world: int, port: int) -> dict:
    import datetime
    import os
    import time

    from model.distributed import Dist
    from model.train import Cancelled, TrainOptions, train_loop

    faulty = {"nan": 1, "oom": 0, "load": 1, "cancel": 0}.get(name)
    mine = rank == faulty
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))
    dist = Dist(rank, world, rank, world, timeout=datetime.timedelta(seconds=1 if name == "slow_eval" else 8))
    cpu = torch.device("cpu")
    dist.start(cpu)
    torch.manual_seed(0)
    net = dist.wrap(_Toy(name if mine else None), cpu)

    def after_step(p):
        if mine and name == "cancel" and p.iteration == 3:
            raise Cancelled()

    out = {"rank": rank}
    try:
        curve = train_loop(net, _Loader(2 if mine and name == "load" else None), TrainOptions(warmup_iters=1),
                           ITERS, cpu, None, after_step, dist)
        out.update(result="returned", iterations=len(curve), w=net.module.w.detach().tolist())
        if name == "slow_eval" and dist.main:
            time.sleep(3)  # rank 0 evaluates for longer than the process group's timeout
    except Exception as e:  # noqa: BLE001 - what each process raised is the result
        out.update(result=type(e).__name__, message=str(e))
    finally:
        dist.finish()
    return out


def _run_scenarios(rank: int, world: int, names: list[str], ports: list[int], folder: str) -> None:
    import json

    results = {}
    for name, port in zip(names, ports):
        try:
            results[name] = _scenario(name, rank, world, port)
        except Exception as e:  # a collective that timed out, or mismatched ones
            results[name] = {"result": "error", "message": f"{type(e).__name__}: {e}"}
    Path(folder, f"rank{rank}.json").write_text(json.dumps(results))


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_processes_stop_together_on_a_fault_of_one_and_none_waits_for_the_evaluation(tmp_path):
    """A NaN loss on rank 1, an out-of-memory in rank 0's forward pass, a batch rank 1 cannot load, a cancel
    on rank 0: every process raises at the same iteration (none is left in an all_reduce). A normal run ends
    on both at the same iteration with the same weights. Rank 0 evaluating for longer than the process
    group's timeout: rank 1 has left without waiting (a barrier there timed out, and torchrun then killed
    rank 0 in its evaluation)."""
    import json

    import torch.multiprocessing as tmp_mp

    names = ["ok", "nan", "oom", "load", "cancel", "slow_eval"]
    tmp_mp.spawn(_run_scenarios, args=(2, names, _free_ports(len(names)), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2))
    for name in names:  # ("error": the scenario failed outside the training loop, e.g. a collective timed out)
        assert r0[name]["result"] != "error" and r1[name]["result"] != "error", (name, r0[name], r1[name])
    assert r0["ok"]["result"] == r1["ok"]["result"] == "returned"
    assert r0["ok"]["iterations"] == r1["ok"]["iterations"] == ITERS and r0["ok"]["w"] == r1["ok"]["w"]
    # the third forward pass (iteration 2) gives NaN on rank 1: both say so at that iteration
    assert r0["nan"]["result"] == r1["nan"]["result"] == "UserError"
    assert "diverged at iteration 2" in r0["nan"]["message"] and "1 of the 2" in r0["nan"]["message"]
    assert r0["oom"]["result"] == "OutOfMemoryError"
    assert r1["oom"]["result"] == "UserError" and "training process 0 of 2 failed (OutOfMemoryError" in r1["oom"]["message"]
    assert r1["load"]["result"] == "RuntimeError"  # its own error, where the loader raised it
    assert r0["load"]["result"] == "UserError" and "training process 1 of 2 failed (RuntimeError: disk gone)" in r0["load"]["message"]
    assert r0["cancel"]["result"] == r1["cancel"]["result"] == "Cancelled"
    assert r0["slow_eval"]["result"] == r1["slow_eval"]["result"] == "returned"


def test_every_trainable_parameter_gets_a_gradient_from_any_batch():
    """Why DDP runs without find_unused_parameters: the keypoint head on a batch without a keypoint class, and
    every head on a batch of background, still give each parameter a gradient (zeros)."""
    from types import SimpleNamespace

    from model import build as mb
    from model.categories import CategoryMap
    from model.config import get
    from model.synthetic import CATEGORIES

    cmap = CategoryMap.from_categories([SimpleNamespace(**{"keypoints": None, **c}) for c in CATEGORIES])
    torch.manual_seed(0)
    net = mb.build(get("tiny"), cmap).train()
    k = cmap.num_keypoints
    mask = torch.zeros(1, 96, 128, dtype=torch.uint8)
    mask[0, 10:60, 10:50] = 1
    shape_only = {"boxes": torch.tensor([[10.0, 10, 50, 60]]), "labels": torch.tensor([cmap.label(3)]),
                  "masks": mask, "keypoints": torch.zeros(1, k, 3)}
    background = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                  "masks": torch.zeros(0, 96, 128, dtype=torch.uint8), "keypoints": torch.zeros(0, k, 3)}
    for targets in ([shape_only, shape_only], [background, background]):
        net.zero_grad(set_to_none=True)
        losses = net([torch.rand(3, 96, 128), torch.rand(3, 96, 128)], targets)
        assert "loss_keypoint" in losses
        sum(losses.values()).backward()
        assert [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None] == []


def test_loader_workers_follow_the_cpu_affinity_and_the_processes_on_the_machine(monkeypatch):
    from model import train as train_mod
    from model.distributed import Dist

    monkeypatch.setattr(train_mod.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert train_mod.loader_workers() == 4
    assert train_mod.loader_workers(Dist(0, 4, 0, 4)) == 0  # 2 cores each: no room for workers
    assert train_mod.loader_workers(Dist(0, 2, 0, 2)) == 2
    monkeypatch.setattr(train_mod.os, "sched_getaffinity", lambda pid: {0, 1})
    assert train_mod.loader_workers() == 0


def test_only_rank_0_registers_round_0(store, monkeypatch):
    """Under torchrun every process ran app.py train's round 0 (N downloads, N active versions); now rank 0
    alone does, and the others train with rank 0's active version (model.train._active_everywhere)."""
    import app
    from model import api

    calls = []
    monkeypatch.setattr(app, "round0", lambda *a, **k: calls.append("round0"))
    monkeypatch.setattr(api, "fine_tune", lambda *a, **k: calls.append("fine_tune"))  # (api.train_as_other_rank)
    monkeypatch.setattr(api, "train_job", lambda *a, **k: calls.append("train_job"))
    argv = [*cli_args(store.settings), "train", "--size", "full", "--device", "cpu"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert app.main(argv) == 0 and calls == ["fine_tune"]
    calls.clear()
    monkeypatch.setenv("RANK", "0")
    app.main(argv)
    assert calls == ["round0", "train_job"]


def test_the_store_holds_one_active_version_whoever_writes_one(store):
    from sqlalchemy.exc import IntegrityError

    from model import predict
    from model.train import activate

    first = predict._register(store, ModelVersion(size="full", checkpoint="coco", category_map={}))
    # a second process's round 0, registered after the first had checked for an active version
    again = predict._register(store, ModelVersion(size="full", checkpoint="coco", category_map={}))
    assert again.id == first.id
    with pytest.raises(IntegrityError):
        with store.transaction() as s:
            s.add(ModelVersion(size="tiny", checkpoint="x.pt", is_active=True))
    with store.transaction() as s:
        other = ModelVersion(size="full", checkpoint="coco", is_active=False)
        s.add(other)
        s.flush()
        other_id = other.id
    activate(store, other_id)
    with store.session() as s:
        assert [v.id for v in s.scalars(select(ModelVersion).where(ModelVersion.is_active))] == [other_id]
