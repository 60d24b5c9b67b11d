"""The canvas's picture route never fails without a message (issue 19): an image it cannot send (a side wider
than a browser canvas, a media file gone, a size an encoder refuses) is refused by name with the reason, which
the page shows; an odd image it can send is sent at full resolution."""

import base64
import io
import re
from types import SimpleNamespace

import pytest
from PIL import Image as PILImage

from annotator import canvas
from db import annotations
from annotator.label_tab import LabelTab
from db.errors import UserError
from tests.helpers import legacy_image


def _tab(store) -> LabelTab:
    return LabelTab(store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None))


def test_an_image_wider_than_a_browser_canvas_is_refused_with_the_reason(store):
    wide = legacy_image(store, 70000, 40, name="wide.png")  # (an older release imported it)
    says = (f"image {wide} (wide.png, 70000x40) cannot be shown: a side over 32767 pixels is wider than a "
            "browser canvas")
    with pytest.raises(UserError, match=f"^{re.escape(says)}$"):
        canvas.picture(store, wide)
    # what the page's server function answers: the reason, which canvas.js shows (a raised error would reach
    # the page as a bare HTTP 500: Gradio's component_server route has no handler for gr.Error)
    assert _tab(store).picture(wide) == {"image_id": wide, "error": says}


def test_a_missing_media_file_or_one_an_encoder_refuses_is_named(make_store, tmp_path):
    store = make_store(tmp_path / "s", max_side=100_000)  # a store whose limits let a 70000 px side through
    gone = legacy_image(store, 40, 30, media=False, name="gone.png")
    with pytest.raises(UserError, match=r"image \d+ \(gone.png, 40x30\) cannot be shown: FileNotFoundError"):
        canvas.picture(store, gone)
    # a file the browser cannot be sent as it is (transparency) is encoded here: JPEG's limit is 65500 px a side
    wide = legacy_image(store, 70000, 40, name="wide.png", mode="RGBA")
    with pytest.raises(UserError, match=r"\(wide.png, 70000x40\) cannot be shown: OSError"):
        canvas.picture(store, wide)


def test_a_thin_strip_the_canvas_can_show_is_sent_at_full_resolution(store):
    thin = legacy_image(store, 2, 5000, name="thin.png")
    pic = _tab(store).picture(thin)
    assert (pic["width"], pic["height"]) == (2, 5000)
    data = base64.b64decode(pic["url"].split(",", 1)[1])
    assert PILImage.open(io.BytesIO(data)).size == (2, 5000)


def test_a_photo_goes_to_the_browser_as_stored_and_a_file_it_cannot_show_as_is_is_encoded(store, tmp_path):
    from db.ingest import ingest

    PILImage.new("RGB", (900, 600), (10, 200, 30)).save(tmp_path / "p.jpg", quality=80)
    (pid, _), = ingest(store, [tmp_path / "p.jpg"]).added
    pic = canvas.picture(store, pid)
    stored = store.media_file(annotations.images(store, [pid])[pid].media_path).read_bytes()
    assert pic["url"].startswith("data:image/jpeg;base64,") and base64.b64decode(pic["url"].split(",", 1)[1]) == stored
    clear = legacy_image(store, 30, 20, name="alpha.png", mode="RGBA")  # transparency: composed by a browser
    pic = canvas.picture(store, clear)
    assert pic["url"].startswith("data:image/png;base64,")
    assert PILImage.open(io.BytesIO(base64.b64decode(pic["url"].split(",", 1)[1]))).mode == "RGB"
