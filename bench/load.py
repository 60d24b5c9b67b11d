"""Many users at once, on loopback: N gradio_client clients label images through the app's API
(``/next_images``, then ``/label_image`` with the canvas's edit messages and a save) for S seconds, while a
fine-tune runs in its own process and a proposal worker (``app.py propose --worker``) proposes on the images
nobody has labeled yet. Counts errors, refused saves (someone else saved the image first: the save is refused
and says so, nothing is lost) and "database is locked" reaching a client; afterwards every save a client was
told succeeded is checked in the database. Latency per call: p50, p95, max.

    .venv/bin/python bench/load.py                       # SQLite, 20 clients, 60 s
    .venv/bin/python bench/load.py --db postgresql+psycopg://postgres@127.0.0.1:55432/postgres

The PostgreSQL database named is emptied first (DROP SCHEMA public CASCADE): give it a scratch database.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradio_client import Client  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from annotator.ui import launch  # noqa: E402
from db import annotations  # noqa: E402
from db.categories import all_categories  # noqa: E402
from db.store import Settings, Store  # noqa: E402
from model import api  # noqa: E402
from model.demo import fill_demo  # noqa: E402
from model.train import TrainOptions, fine_tune  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {"/next_images": [], "/label_image": []}
        self.saved: dict[int, str] = {}  # image id -> the client told its save went through
        self.refused = 0
        self.errors: list[str] = []

    def time(self, name: str, fn):
        t = time.perf_counter()
        try:
            return fn()
        finally:
            with self.lock:
                self.latency[name].append(time.perf_counter() - t)


def client_loop(url: str, k: int, cid: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(k)
    client = Client(url, verbose=False)
    while time.monotonic() < deadline:
        try:
            queue = tally.time("/next_images", lambda: client.predict(40, api_name="/next_images"))
            if not queue:
                return
            image_id = rng.choice(queue)  # several clients may pick the same image: that is the point
            x, y = rng.uniform(2, 40), rng.uniform(2, 40)
            ops = [{"op": "accept_all"},
                   {"op": "polygon", "points": [[x, y], [x + 20, y], [x + 10, y + 18]], "category": cid},
                   {"op": "save"}]
            got = tally.time("/label_image", lambda: client.predict(image_id, ops, api_name="/label_image"))
            said = got["messages"][-1]
            with tally.lock:
                if said.startswith(f"saved image {image_id}"):
                    tally.saved[image_id] = said
                elif "changed in the store since you opened it" in said:
                    tally.refused += 1
                else:
                    tally.errors.append(said)
        except Exception as e:  # what reached the client
            with tally.lock:
                tally.errors.append(f"{type(e).__name__}: {e}")


def _fresh_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--db", default=None, help="a scratch PostgreSQL database (emptied first); default SQLite")
    a = ap.parse_args(argv)
    if not 1 <= a.clients <= 100 or not 1 <= a.seconds <= 600:
        ap.error("--clients 1..100 and --seconds 1..600 (this is a bounded load test)")
    with tempfile.TemporaryDirectory() as tmp:
        if a.db:
            _fresh_postgres(a.db)
        store = Store(Settings(store_dir=Path(tmp) / "store", db_url=a.db))
        fill_demo(store, n_images=a.images, labeled_train=min(40, a.images // 3), size=96, seed=3)
        print("training a first model for the proposal worker ...", flush=True)
        fine_tune(store, TrainOptions(size="tiny", epochs=2, device="cpu"))
        cid = all_categories(store)[-1].id
        port = _port()
        demo = launch(store, port=port, block=False)
        url = f"http://127.0.0.1:{port}/"
        job = api.start_training_process(store, TrainOptions(size="tiny", epochs=1000, device="cpu"))
        worker = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--store", str(store.settings.store_dir),
                                   *(["--db", a.db] if a.db else []), "propose", "--worker", "--claim", "4",
                                   "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        tally = Tally()
        time.sleep(3)  # the training process and the worker get going
        deadline = time.monotonic() + a.seconds
        threads = [threading.Thread(target=client_loop, args=(url, k, cid, deadline, tally)) for k in range(a.clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        api.cancel(store, job)
        worker.terminate()
        worker.wait(timeout=60)
        demo.close()
        lost = []
        for image_id in tally.saved:  # each image a client was told is saved: done, with its accepted label
            got = annotations.load(store, image_id)
            if got.image.status != "done" or not any(a.review_state == "accepted" for a in got.annotations):
                lost.append(image_id)
        locked = [e for e in tally.errors if "locked" in e.lower()]
        backend = "PostgreSQL" if a.db else "SQLite"
        print(f"{backend}: {a.clients} clients for {wall:.0f} s while a fine-tune and a proposal worker ran")
        for name, xs in tally.latency.items():
            if xs:
                print(f"  {name}: {len(xs)} calls, p50 {1000 * statistics.median(xs):.0f} ms, "
                      f"p95 {1000 * _pct(xs, 0.95):.0f} ms, max {1000 * max(xs):.0f} ms")
        print(f"  saves: {len(tally.saved)} images saved, {tally.refused} saves refused because another client "
              f"saved the image first, {len(lost)} lost; errors: {len(tally.errors)} "
              f"({len(locked)} 'database is locked')")
        for e in tally.errors[:5]:
            print(f"    {e[:300]}")
        store.close()
        return 1 if tally.errors or lost else 0


if __name__ == "__main__":
    sys.exit(main())
