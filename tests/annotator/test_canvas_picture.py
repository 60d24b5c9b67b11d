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
from annotator.ui import LabelTab
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
    wide = legacy_image(store, 70000, 40, name="wide.png")  # JPEG's limit is 65500 pixels a side
    with pytest.raises(UserError, match=r"\(wide.png, 70000x40\) cannot be shown: OSError"):
        canvas.picture(store, wide)


def test_a_thin_strip_the_canvas_can_show_is_sent_at_full_resolution(store):
    thin = legacy_image(store, 2, 5000, name="thin.png")
    pic = _tab(store).picture(thin)
    assert (pic["width"], pic["height"]) == (2, 5000)
    data = base64.b64decode(pic["url"].split(",", 1)[1])
    assert PILImage.open(io.BytesIO(data)).size == (2, 5000)
