"""The export formats' table (db.formats): one line per format, read by app.py and the Export tab."""

import pytest

from db import formats
from db.errors import UserError


def test_every_format_names_its_download_and_summary_and_takes_the_common_options():
    import inspect

    assert set(formats.FORMATS) == {"coco", "yolo"}
    for name, f in formats.FORMATS.items():
        assert f.name == name and f.label
        params = inspect.signature(f.export).parameters
        assert {"include_proposals", "all_images"} <= set(params) and list(params)[:2] == ["store", "out"]
        assert f.download(True).endswith(".zip")


@pytest.mark.parametrize("bad", ["voc", "", None, 3, "COCO"])
def test_an_unknown_format_is_refused_by_name(bad):
    with pytest.raises(UserError, match="export format .*: one of coco, yolo"):
        formats.named(bad)
