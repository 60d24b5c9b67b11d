import os
import socket

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_app(tmp_path_factory, store_factory):
    """The full app on a temporary store holding synthetic images, launched on a free local port."""
    from annotator.server import launch
    from model.demo import fill_demo

    store = store_factory(tmp_path_factory.mktemp("app"))
    fill_demo(store, n_images=20, labeled_train=8, size=96, seed=5)
    port = free_port()
    demo = launch(store, port=port, block=False)
    yield store, f"http://127.0.0.1:{port}/"
    demo.close()
    store_factory.release(store)


@pytest.fixture(scope="package")
def app_with_model(tmp_path_factory, store_factory):
    """The app on a demo store with a tiny fine-tuned model and its proposals (trained once for the browser
    tests); yields (store, url, an image with at least two proposals)."""
    from sqlalchemy import func, select

    from annotator.server import launch
    from db.schema import Annotation
    from model.api import ModelOptions, propose_images
    from model.demo import fill_demo
    from model.predict import images_to_propose
    from model.train import TrainOptions, fine_tune

    store = store_factory(tmp_path_factory.mktemp("e2e"))
    fill_demo(store, n_images=40, labeled_train=24, size=128, seed=7)
    # a fixed number of iterations (150, about a minute here), not a time limit: the same model on a busy machine
    fine_tune(store, TrainOptions(epochs=25, size="tiny"))
    propose_images(store, images_to_propose(store), ModelOptions(weights="none"), min_score=0.05)
    with store.session() as s:
        image_id = s.execute(select(Annotation.image_id, func.count()).where(Annotation.review_state == "proposed")
                             .group_by(Annotation.image_id).having(func.count() >= 2)
                             .order_by(Annotation.image_id)).first()[0]
    port = free_port()
    demo = launch(store, port=port, block=False)
    yield store, f"http://127.0.0.1:{port}/", image_id
    demo.close()
    store_factory.release(store)
