import os
import socket

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_app(tmp_path_factory):
    """The full app on a temporary store holding synthetic images, launched on a free local port."""
    from annotator.ui import launch
    from db.store import Settings, Store
    from model.demo import fill_demo

    store = Store(Settings(store_dir=tmp_path_factory.mktemp("app")))
    fill_demo(store, n_images=20, labeled_train=8, size=96, seed=5)
    port = free_port()
    demo = launch(store, port=port, block=False)
    yield store, f"http://127.0.0.1:{port}/"
    demo.close()
