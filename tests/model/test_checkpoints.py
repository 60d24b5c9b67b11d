"""A checkpoint is loaded and run before it is registered or made active (issue 7)."""

import numpy as np
import pytest
import torch

from db.coco_import import import_coco
from db.errors import UserError
from db.schema import ModelVersion
from model import build as mb
from model.config import get
from model.data import store_category_map
from model.options import ModelOptions
from model.predict import active_version, ensure_round0
from model.train import activate

TINY = get("tiny")


def _save(path, cmap, mutate=None, size="tiny"):
    state = {k: v.detach().clone() for k, v in mb.build(TINY, cmap).state_dict().items()}
    if mutate:
        mutate(state)
    torch.save({"format": mb.CHECKPOINT_FORMAT, "size": size, "category_map": cmap.to_dict(),
                "state_dict": state}, path)


def _wider_head(state):
    key = next(k for k in state if k.endswith("box_head.fc6.weight"))
    state[key] = torch.zeros(state[key].shape[0] * 2, state[key].shape[1])


@pytest.fixture
def store(make_store, tmp_path, synth_dir):
    st = make_store(tmp_path / "s")
    import_coco(st, synth_dir / "annotations.json", synth_dir)
    yield st
    st.close()


@pytest.mark.parametrize("mutate, size, says", [
    (_wider_head, "tiny", "does not fit"),
    (lambda st: st.pop(next(iter(st))), "tiny", "does not fit"),
    (None, "huge", "unknown model size"),
])
def test_weights_path_of_another_architecture_is_refused_before_registering(make_store, store, tmp_path, mutate, size, says):
    path = tmp_path / "other.pt"
    _save(path, store_category_map(store), mutate, size)
    st2 = make_store.open(store.settings)
    with pytest.raises(UserError, match=says):
        ensure_round0(st2, ModelOptions(weights=str(path)))
    assert active_version(st2) is None
    with st2.session() as s:
        assert s.query(ModelVersion).count() == 0


def test_activating_a_version_whose_checkpoint_does_not_load_keeps_the_active_one(store, tmp_path):
    cmap = store_category_map(store)
    store.settings.models_dir.mkdir(parents=True, exist_ok=True)
    _save(store.settings.models_dir / "good.pt", cmap)
    _save(store.settings.models_dir / "bad.pt", cmap, _wider_head)
    with store.transaction() as s:
        s.add_all([ModelVersion(size="tiny", checkpoint="good.pt", category_map=cmap.to_dict()),
                   ModelVersion(size="tiny", checkpoint="bad.pt", category_map=cmap.to_dict())])
    assert activate(store, 1).is_active
    with pytest.raises(UserError, match="bad.pt does not fit"):
        activate(store, 2)
    assert active_version(store).id == 1


def test_weights_files_that_are_no_checkpoint_are_refused_by_name(store, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 20)
    notes = tmp_path / "notes.pth"
    torch.save({101: 1}, notes)
    for path, says in ((garbage, "not a file torch can read"), (notes, "neither a maskloop checkpoint"),
                       (tmp_path / "missing.pt", "no such file")):
        with pytest.raises(UserError, match=says):
            ensure_round0(store, ModelOptions(weights=str(path)))
    assert active_version(store) is None


def test_a_maskloop_checkpoint_is_accepted_whatever_its_extension(store, tmp_path):
    path = tmp_path / "model.ckpt"
    _save(path, store_category_map(store))
    assert ensure_round0(store, ModelOptions(weights=str(path))).is_active


def test_a_deleted_active_checkpoint_is_not_a_dead_end(store, tmp_path):
    from model.predict import Predictor
    from model.train import TrainOptions, fine_tune

    path = tmp_path / "model.pt"
    _save(path, store_category_map(store))
    v = ensure_round0(store, ModelOptions(weights=str(path)))
    (store.settings.models_dir / v.checkpoint).unlink()
    with pytest.raises(UserError, match="activate another|train a new version|Train a new version"):
        Predictor.for_version(store, ModelOptions(weights="none"))
    r = fine_tune(store, TrainOptions(epochs=1, size="tiny", weights="none", promote="always"))
    assert any("training from scratch" in w for w in r.warnings) and r.promoted
    assert len(Predictor.for_version(store, ModelOptions()).predict([np.zeros((40, 40, 3), np.uint8)])) == 1


def test_offline_the_coco_weights_are_one_line_without_a_download_attempt(monkeypatch, capsys):
    import pytest

    from model import build

    monkeypatch.setattr(build, "_cached", lambda url: False)
    monkeypatch.setattr(build, "_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(build, "maskrcnn_resnet50_fpn_v2", lambda **k: pytest.fail("no download may be tried"))
    with pytest.raises(build.WeightsUnavailable, match="download.pytorch.org cannot be reached"):
        build.load_coco_nets("coco")
    assert capsys.readouterr().err == ""  # no "Downloading ..." line before ours
