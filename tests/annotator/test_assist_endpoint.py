"""/assist_box through gradio_client against the app with a trained tiny model: the answer's shape, that it
writes nothing, and a clear message for each kind of bad input (the no-model case: test_app_client.py)."""

import pytest
from gradio_client import Client
from pycocotools import mask as coco_mask
from sqlalchemy import func, select

pytestmark = pytest.mark.model_only  # not in the PostgreSQL pass: a model's data, tested elsewhere on it


def test_assist_box_answers_and_writes_nothing(app_with_model):
    from db.schema import Annotation

    store, url, image_id = app_with_model
    client = Client(url, verbose=False)
    with store.session() as s:
        before = s.scalar(select(func.count()).select_from(Annotation))
    got = client.predict(image_id, [10, 10, 90, 100], None, api_name="/assist_box")
    assert set(got) == {"category_id", "score", "bbox", "segmentation", "keypoints", "model_version_id"}
    assert isinstance(got["segmentation"]["counts"], str) and got["segmentation"]["size"] == [128, 128]
    m = coco_mask.decode({"size": [128, 128], "counts": got["segmentation"]["counts"].encode()})
    x, y, w, h = got["bbox"]
    assert m.sum() > 0 and 10 - 1 <= x and x + w <= 90 + 1  # inside the box asked about, tight on the mask
    chosen = client.predict(image_id, [10, 10, 90, 100], 3, api_name="/assist_box")
    assert chosen["category_id"] == 3 and chosen["keypoints"] is None
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Annotation)) == before


@pytest.mark.parametrize("args, says", [
    ((10 ** 9, [0, 0, 10, 10], None), "no image with id 1000000000"),
    (("IMAGE", [0, 0, 10, 10], None), "image id 'IMAGE' is not an integer"),
    ((None, [500, 500, 900, 900], None), "the box is empty inside the 128x128 image"),
    ((None, [5, 5, 5, 40], None), "the box is empty"),
    ((None, [0, 0, 10], None), r"the box must be \[x0, y0, x1, y1\]"),
    ((None, [0, 0, 10, 10], 77), "no category with id 77"),
    ((None, [0, 0, 10, 10], 2.5), "category id 2.5 is not an integer"),
])
def test_assist_box_names_bad_input(app_with_model, args, says):
    store, url, image_id = app_with_model
    args = (image_id if args[0] is None else args[0],) + args[1:]
    with pytest.raises(Exception, match=says):
        Client(url, verbose=False).predict(*args, api_name="/assist_box")
