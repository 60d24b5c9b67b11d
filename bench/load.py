"""Many users at once, on loopback: N gradio_client clients label images through the app's API
(``/next_images``, then ``/label_image`` with the canvas's edit messages and a save) for S seconds, while a
fine-tune runs in its own process and a proposal worker (``app.py propose --worker``) proposes on the images
nobody has labeled yet. Counts errors, refused saves (someone else saved the image first: the save is refused
and says so, nothing is lost) and "database is locked" reaching a client; afterwards every save a client was
told succeeded is checked in the database. Latency per call: p50, p95, max.

    .venv/bin/python bench/load.py                       # SQLite, 20 clients, 60 s
    .venv/bin/python bench/load.py --db postgresql+psycopg://postgres@127.0.0.1:55432/postgres
    .venv/bin/python bench/load.py --team --seconds 120  # a team: 10 labelers and a reviewer, with claims

With ``--team`` every client has an account: each labeler asks ``/next_images`` for one image (handed to
them alone: a claim), labels it and saves; a reviewer asks for the newest save awaiting a verdict and
approves it or sends it back. It counts saves refused because two people were handed the same image (the
target: none) and images whose labels two people saved.

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

from annotator.server import launch  # noqa: E402
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
        self.verdicts: dict[str, int] = {}

    def time(self, name: str, fn):
        t = time.perf_counter()
        try:
            return fn()
        finally:
            with self.lock:
                self.latency[name].append(time.perf_counter() - t)


def label_once(client, image_id: int, rng: random.Random, cid: int, tally: Tally, finish: tuple = ()) -> None:
    """Label one image as a client does (accept all, a new triangle of category ``cid``, the ops ``finish``,
    save) and count the answer: saved, refused (someone else saved it first) or an error."""
    x, y = rng.uniform(2, 40), rng.uniform(2, 40)
    ops = [{"op": "accept_all"}, {"op": "polygon", "points": [[x, y], [x + 20, y], [x + 10, y + 18]], "category": cid},
           *finish, {"op": "save"}]
    got = tally.time("/label_image", lambda: client.predict(image_id, ops, api_name="/label_image"))
    said = got["messages"][-1]
    with tally.lock:
        if said.startswith(f"saved image {image_id}"):
            tally.saved[image_id] = said
        elif "changed in the store since you opened it" in said:
            tally.refused += 1
        else:
            tally.errors.append(said)


def client_loop(url: str, k: int, cid: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(k)
    client = Client(url, verbose=False)
    while time.monotonic() < deadline:
        try:
            queue = tally.time("/next_images", lambda: client.predict(40, api_name="/next_images"))
            if not queue:
                return
            # several clients may pick the same image: that is the point
            label_once(client, rng.choice(queue), rng, cid, tally)
        except Exception as e:  # what reached the client
            with tally.lock:
                tally.errors.append(f"{type(e).__name__}: {e}")


PASSWORD = "load-bench-password"


def labeler_loop(url: str, name: str, cid: int, deadline: float, tally: Tally) -> None:
    """A labeler of a team: asks for one image (handed to them alone), labels it and saves, and again."""
    rng = random.Random(name)
    client = Client(url, auth=(name, PASSWORD), verbose=False)
    while time.monotonic() < deadline:
        try:
            got = tally.time("/next_images", lambda: client.predict(1, "label", api_name="/next_images"))
            if not got:
                time.sleep(0.5)
                continue
            label_once(client, got[0], rng, cid, tally, finish=({"op": "reject_rest"},))
        except Exception as e:  # what reached the client
            with tally.lock:
                tally.errors.append(f"{type(e).__name__}: {e}")


def reviewer_loop(url: str, name: str, deadline: float, tally: Tally) -> None:
    """The team's reviewer: asks for the newest save awaiting a verdict, approves it (every fifth: sends it
    back with a note), and again."""
    client = Client(url, auth=(name, PASSWORD), verbose=False)
    k = 0
    while time.monotonic() < deadline:
        try:
            got = tally.time("/next_images review", lambda: client.predict(1, "review", api_name="/next_images"))
            if not got:
                time.sleep(0.5)
                continue
            k += 1
            op = {"op": "send_back", "note": "the triangle is off"} if k % 5 == 0 else {"op": "approve"}
            out = tally.time("/label_image verdict", lambda: client.predict(got[0], [op], api_name="/label_image"))
            with tally.lock:
                tally.verdicts[op["op"]] = tally.verdicts.get(op["op"], 0) + 1
                said = out["messages"][-1]
                if "sent back" not in said and "approved" not in said:
                    tally.errors.append(said)
        except Exception as e:  # what reached the client
            with tally.lock:
                tally.errors.append(f"{type(e).__name__}: {e}")


def accounts(store: Store, labelers: int) -> list[str]:
    """The team's accounts (made before the app starts: it asks for a login when the store has accounts)."""
    from db import users

    users.SCRYPT_N = 2 ** 10  # (the accounts' password hashing is not what this measures)
    names = [f"labeler{k}" for k in range(labelers)]
    for n in names:
        users.add(store, n, "labeler", PASSWORD)
    users.add(store, "reviewer", "reviewer", PASSWORD)
    return names


def team(url: str, names: list[str], a, cid: int) -> tuple[Tally, float]:
    """The labelers ``names`` and one reviewer, each with their account, for ``a.seconds``."""
    tally = Tally()
    tally.latency.update({"/next_images review": [], "/label_image verdict": []})
    deadline = time.monotonic() + a.seconds
    threads = [threading.Thread(target=labeler_loop, args=(url, n, cid, deadline, tally)) for n in names]
    threads.append(threading.Thread(target=reviewer_loop, args=(url, "reviewer", deadline, tally)))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally, time.monotonic() - t0


def labeled_by_two(store: Store) -> list[int]:
    """Images whose labels more than one person saved (the review rows of the Label tab and /label_image)."""
    from sqlalchemy import func, select

    from db.schema import Review

    with store.session() as s:
        return list(s.scalars(select(Review.image_id).group_by(Review.image_id)
                              .having(func.count(func.distinct(Review.user)) > 1)))


def _ended(store: Store, job_id: int, timeout: float = 120.0) -> None:
    """Wait for the cancelled fine-tune's process to stop (it writes into the store's folder until then)."""
    from db import jobs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = jobs.get(store, job_id)
        if j is None or j.state not in jobs.ACTIVE:
            return
        time.sleep(0.5)


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
    ap.add_argument("--team", action="store_true",
                    help="a team with accounts instead: --labelers labelers each handed their own images by "
                         "/next_images (claims) and one reviewer judging the saves; no fine-tune runs")
    ap.add_argument("--labelers", type=int, default=10)
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
        names = accounts(store, a.labelers) if a.team else []
        port = _port()
        demo = launch(store, port=port, block=False)
        url = f"http://127.0.0.1:{port}/"
        job = (None if a.team else
               api.start_training_process(store, TrainOptions(size="tiny", epochs=1000, device="cpu")))
        worker = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--store", str(store.settings.store_dir),
                                   *(["--db", a.db] if a.db else []), "propose", "--worker", "--claim", "4",
                                   "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(3)  # the training process and the worker get going
        if a.team:
            tally, wall = team(url, names, a, cid)
        else:
            tally = Tally()
            deadline = time.monotonic() + a.seconds
            threads = [threading.Thread(target=client_loop, args=(url, k, cid, deadline, tally))
                       for k in range(a.clients)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.monotonic() - t0
        if job is not None:
            api.cancel(store, job)
            _ended(store, job)
        worker.terminate()
        worker.wait(timeout=60)
        demo.close()
        lost = []
        back = set(annotations.sent_back(store))  # (team: a reviewer sent it back since: it waits, in review)
        for image_id in tally.saved:  # each image a client was told is saved: done, with its accepted label
            got = annotations.load(store, image_id)
            if (got.image.status != "done" and image_id not in back) or not any(
                    a.review_state == "accepted" for a in got.annotations):
                lost.append(image_id)
        locked = [e for e in tally.errors if "locked" in e.lower()]
        backend = "PostgreSQL" if a.db else "SQLite"
        two = labeled_by_two(store) if a.team else []
        if a.team:
            print(f"{backend}: {a.labelers} labelers and 1 reviewer for {wall:.0f} s while a proposal worker ran")
            print(f"  verdicts: {tally.verdicts}; images labeled by two people: {len(two)}")
            for image_id in two[:3]:  # what happened to them, in order
                print(f"    image {image_id}: " + "; ".join(f"{e.at:%H:%M:%S.%f} {e.user} {e.what}"
                                                         for e in annotations.history(store, image_id)))
        else:
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
        return 1 if tally.errors or lost or two or (a.team and tally.refused) else 0


if __name__ == "__main__":
    sys.exit(main())
