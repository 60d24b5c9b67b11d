"""Round 0 as a user meets it (``--weights coco``), offline: torchvision's COCO networks loaded by the product
code from the torch hub cache, which holds stand-in files (model/standin.py: torchvision's architectures,
random weights, the real files' names). Proposals, the assist refusal, a full-size fine-tune from the COCO
start, the version it writes, reloaded and proposing. Random weights: plumbing, never quality.

The full configuration is shrunk for the module (small images, few RPN proposals and detections) so that a
CPU runs it in about a minute; the round-0 networks take the same sizes (model.build.load_coco_nets)."""

import dataclasses

import pytest
import torch
from PIL import Image
from sqlalchemy import select

from annotator import model_view
from db import annotations
from db.coco_import import import_coco
from db.errors import UserError
from db.ingest import ingest
from db.schema import Annotation, Job, ModelVersion
from model import api, config, standin
from model import build as build_mod
from model.build import build, init_from_coco, load_coco_nets, read_checkpoint
from model.data import store_category_map
from model.options import ModelOptions
from model.predict import Predictor
from model.synthetic import make_coco, write_photo
from model.train import TrainOptions

pytestmark = pytest.mark.model_only  # not in the PostgreSQL pass: a model's data, tested elsewhere on it

OPTIONS = ModelOptions(device="cpu", weights="coco")
SMALL_FULL = dataclasses.replace(  # the full model (R50-FPN v2 and its heads), looking at small images
    config.FULL, min_size_train=(128,), min_size_test=128, max_size=192, rpn_pre_nms_train=300,
    rpn_post_nms_train=100, rpn_pre_nms_test=100, rpn_post_nms_test=50, box_batch_per_image=16,
    detections_per_image=5)
PERSON, DOG, WIDGET = 1, 18, 500  # COCO's ids for person and dog (the mapping goes by name), and one of ours


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A TORCH_HOME holding the stand-in COCO weights, and the small full configuration, for the module."""
    home = tmp_path_factory.mktemp("torch_home")
    standin.write(home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        assert torch.hub.get_dir() == str(home / "hub"), "torch.hub.set_dir was called: TORCH_HOME is not read"
        mp.setitem(config.CONFIGS, "full", SMALL_FULL)
        yield home


@pytest.fixture(scope="module")
def store(torch_home, tmp_path_factory, store_factory):
    """Person (COCO's 17 keypoints), dog and widget; three labeled 160 px images (ids 1-3, none held out)
    and one unlabeled 320x240 photo."""
    st = store_factory(tmp_path_factory.mktemp("round0"))
    files, coco = make_coco(3, size=160, seed=4)
    person = next(c for c in coco["categories"] if c["name"] == "person")  # (COCO's 17 keypoints, in order)
    coco["categories"] = [dict(person, id=PERSON), {"id": DOG, "name": "dog", "supercategory": "animal"},
                          {"id": WIDGET, "name": "widget", "supercategory": "thing"}]
    shapes = {1: PERSON, 3: DOG, 5: WIDGET, 9: WIDGET}  # (synthetic person, disc, triangle, square)
    for a in coco["annotations"]:
        a["category_id"] = shapes[a["category_id"]]
    assert {a["category_id"] for a in coco["annotations"]} == {PERSON, DOG, WIDGET}
    folder = tmp_path_factory.mktemp("round0_files")
    for name, pix in files:
        Image.fromarray(pix).save(folder / name)
    import_coco(st, coco, folder)
    assert len(ingest(st, [write_photo(folder / "photo.jpg", 320, 240, seed=2)]).added) == 1
    yield st
    store_factory.release(st)


@pytest.fixture(scope="module")
def photo(store):
    """The unlabeled photo's image id."""
    return annotations.image_ids(store, status="new")[0]


def _rows(store, version_id):
    with store.session() as s:
        return s.scalars(select(Annotation).where(Annotation.model_version_id == version_id)).all()


def test_the_stand_ins_are_the_files_torchvision_reads(torch_home):
    paths = standin.write(torch_home)  # (written by the fixture: kept as they are)
    assert all(p.is_file() for p in paths) and all(build_mod._cached(w.url) for w in standin.WEIGHTS)  # no download
    with pytest.raises(ValueError, match="never a real torch cache"):
        standin.write(torch_home / "hub")  # a folder it did not make


def test_round0_proposes_through_the_product_path(store, photo):
    v = api.ensure_round0(store, OPTIONS)
    assert (v.id, v.checkpoint, v.size, v.is_active) == (1, "coco", "full", True)
    with pytest.raises(UserError, match="assist needs a fine-tuned model"):
        api.assistant(store, OPTIONS)
    pred = api.predictor(store, OPTIONS)
    assert pred.coco is not None and pred.coco.instances.transform.min_size == (SMALL_FULL.min_size_test,)
    r = api.propose_images(store, [photo], OPTIONS, min_score=0.3, predictor=pred)
    rows = _rows(store, 1)
    assert r["images"] == 1 and not r["skipped"] and r["proposals"] == len(rows) > 0
    assert {a.category_id for a in rows} <= {PERSON, DOG}  # COCO classes by name; widget is not one of them
    persons = [a for a in rows if a.category_id == PERSON]
    assert persons and all(len(a.keypoints) == 17 * 3 for a in persons)  # the keypoint network's persons


def test_the_coco_start_maps_classes_by_name_and_keeps_the_person_keypoints(store):
    cmap = store_category_map(store)
    coco = load_coco_nets("coco")
    model = build(config.get("full"), cmap)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    assert init_from_coco(model, coco, cmap) == ["person", "dog"]
    got, src = model.state_dict(), coco.instances.state_dict()
    key = "roi_heads.box_predictor.cls_score.weight"
    for name in ("person", "dog"):
        assert torch.equal(got[key][cmap.names.index(name) + 1], src[key][coco.categories.index(name)])
    assert torch.equal(got[key][cmap.names.index("widget") + 1], fresh[key][cmap.names.index("widget") + 1])
    kp = "roi_heads.keypoint_predictor.kps_score_lowres.weight"
    assert got[kp].shape[1] == 17 and torch.equal(got[kp], coco.keypoints.state_dict()[kp])
    assert torch.equal(got["backbone.body.conv1.weight"], src["backbone.body.conv1.weight"])


@pytest.fixture(scope="module")
def tuned(store):
    """The first fine-tune: the full model from the COCO start, a few iterations, as a job."""
    api.ensure_round0(store, OPTIONS)
    return api.train_job(store, TrainOptions(epochs=1, batch_size=1, device="cpu", weights="coco"))


def test_a_full_fine_tune_from_the_coco_start_writes_a_version(store, tuned, torch_home):
    assert tuned.iterations == 3 and not tuned.skipped
    assert not any("scratch" in w or "COCO weights" in w for w in tuned.warnings)  # it did start from COCO
    with store.session() as s:
        v = s.get(ModelVersion, tuned.version_id)
        job = s.scalars(select(Job)).one()
    assert (v.id, v.size, v.parent_id, v.images_used) == (2, "full", 1, 3)
    assert not v.promoted and not v.is_active and v.metrics["heldout_images"] == 0  # nothing held out yet
    assert (job.state, job.message) == ("done", "version 2 not promoted: no held-out labels to compare it with the "
                                                "active version on")
    advice = model_view.job_panel(store)["markdown"]  # the Model tab: ids 1-4, the first held-out one is 11
    assert "import at least 7 more image(s), so that image **11** exists" in advice
    assert "type **2** under *Version* below and click **Make active**" in advice
    ck = read_checkpoint(store.settings.models_dir / v.checkpoint)
    state = ck["state_dict"]
    assert ck["size"] == "full" and state["roi_heads.box_predictor.cls_score.weight"].shape[0] == 4
    assert state["roi_heads.keypoint_predictor.kps_score_lowres.weight"].shape[1] == 17
    coco = torch.load(standin.checkpoint_path(torch_home, standin.WEIGHTS[0]), weights_only=True)
    assert torch.equal(state["backbone.body.conv1.weight"], coco["backbone.body.conv1.weight"])  # frozen stem


def test_the_new_version_reloads_proposes_and_assists(store, tuned, photo):
    v = api.activate(store, tuned.version_id)  # the Model tab's Make active
    pred = Predictor.for_version(store, OPTIONS, v)
    assert pred.net is not None and not pred.unknown
    r = api.propose_images(store, [photo], OPTIONS, min_score=0.0, predictor=pred)
    assert r["images"] == 1 and not r["skipped"] and r["proposals"] == len(_rows(store, v.id))
    assert not _rows(store, 1)  # the round-0 proposals, unreviewed, were replaced
    helper = api.Assistant(pred)  # (what api.assistant makes for the active version, without loading it again)
    answer = api.assist_box(store, helper, photo, [40, 30, 200, 220], category_id=PERSON)
    assert answer["model_version_id"] == v.id and answer["category_id"] == PERSON
    assert len(answer["keypoints"]) == 17 * 3
    answer = api.assist_box(store, helper, photo, [40, 30, 200, 220])
    assert answer["category_id"] in (PERSON, DOG, WIDGET) and answer["segmentation"]["size"] == [240, 320]
