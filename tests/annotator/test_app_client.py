"""The running app answers through gradio_client."""


from gradio_client import Client, handle_file
from pycocotools.coco import COCO


def test_store_counts_upload_and_export_through_the_api(running_app, tmp_path, synth_dir):
    store, url = running_app
    client = Client(url, verbose=False)
    by_status, by_cat, *_ = client.predict(api_name="/refresh_store")
    counts = {row[0]: row[1] for row in by_status["data"]}
    assert counts["done"] > 0 and counts["new"] > 0
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 nothing else")
    report = client.predict([handle_file(str(synth_dir / "synth_000001.png")), handle_file(str(bad))],
                            api_name="/import_images")
    assert "imported 1 image(s)" in report and "skipped: broken.jpg: corrupt or truncated image" in report
    path = client.predict(False, False, False, api_name="/export")
    coco = COCO(path)
    assert len(coco.dataset["images"]) == counts["done"]  # only images whose labels are done
    every = COCO(client.predict(False, False, True, api_name="/export"))
    assert len(every.dataset["images"]) == counts["done"] + counts["new"] + 1
    for ann in coco.dataset["annotations"]:
        assert coco.annToMask(ann).sum() == ann["area"]


def test_assist_box_without_a_model_says_so(running_app):
    """The /assist_box endpoint exists and answers bad input with a message (the store has no model yet)."""
    import pytest

    _, url = running_app
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="no model yet"):
        client.predict(1, [0, 0, 10, 10], None, api_name="/assist_box")


def test_label_an_image_through_the_api(running_app):
    """/next_images and /label_image: one call opens an image, applies edit messages and saves."""
    import pytest

    from db import annotations
    from db.categories import all_categories

    store, url = running_app
    client = Client(url, verbose=False)
    queue = client.predict(5, api_name="/next_images")
    assert queue == annotations.queue(store)[:5] and queue
    image_id = queue[0]
    cid = all_categories(store)[0].id
    got = client.predict(image_id, [{"op": "polygon", "points": [[1, 1], [30, 1], [30, 30]], "category": cid},
                                    {"op": "save"}], api_name="/label_image")
    assert got["messages"][-1] == f"saved image {image_id}: done" and got["status"] == "done"
    assert annotations.images(store, [image_id])[image_id].status == "done"
    with pytest.raises(Exception, match="edit message 1: unknown canvas action 'fly'"):
        client.predict(image_id, [{"op": "select", "index": 0}, {"op": "fly"}, {"op": "save"}],
                       api_name="/label_image")
    with pytest.raises(Exception, match="no image with id 999999"):
        client.predict(999999, [], api_name="/label_image")


def test_the_dataset_tab_lists_the_images_the_model_could_not_use(running_app):
    from db import annotations
    from tests.helpers import legacy_image

    store, url = running_app
    thin = legacy_image(store, 1, 5000, status="done", name="tab_thin.png")  # (done: not in the label queue)
    annotations.record_problems(store, {thin: "1x5000: the model shrinks it to 0x192 pixels"})
    out = Client(url, verbose=False).predict(api_name="/refresh_store")
    line, table = out[5], out[6]
    assert "image(s) the model could not use" in line
    assert [thin, "tab_thin.png", "1x5000: the model shrinks it to 0x192 pixels"] in [r[:3] for r in table["data"]]
