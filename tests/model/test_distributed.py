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
