"""Paired before/after of a Label page's server memory and time at photo size (issue 19): the same work on
both sides, a 6000x4000 JPEG with the same 20 elliptical proposals (radii 80-500 px), 5 pages opened
(labels + canvas data), then 20 accepts/rejects on one of them; the two checkouts alternate over several
pairs in one run, each side in a fresh process, and the ratio is reported per pair.

    git worktree add /tmp/before <commit>         # the release to compare with
    .venv/bin/python bench/page_ab.py --before /tmp/before [--pairs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDE = r'''
import gc, json, sys, tempfile, time
from pathlib import Path
import numpy as np
from PIL import Image

def rss():
    for l in Path("/proc/self/status").read_text().splitlines():
        if l.startswith("VmRSS:"):
            return int(l.split()[1]) * 1024

from annotator import canvas
from annotator.labeling import LabelSession
from db.annotations import write_proposals
from db.categories import add as add_category
from db.ingest import ingest
from db.instances import Instances
from db.schema import ModelVersion
from db.store import Settings, Store

tmp = Path(tempfile.mkdtemp())
rng = np.random.default_rng(0)
Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).resize((6000, 4000), Image.BILINEAR).save(tmp / "p.jpg", quality=90)
store = Store(Settings(store_dir=tmp / "s"))
(iid, _), = ingest(store, [tmp / "p.jpg"]).added
cid = add_category(store, "blob", "", [], [])
inst = Instances(4000, 6000)
for k in range(20):  # the same 20 ellipses on both sides (radii 80..500 px)
    rx, ry = (int(v) for v in rng.integers(80, 500, 2))
    cx, cy = int(rng.integers(rx, 6000 - rx)), int(rng.integers(ry, 4000 - ry))
    yy, xx = np.ogrid[:4000, :6000]
    m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    inst.add(cid, [cx - rx, cy - ry, 2 * rx + 1, 2 * ry + 1], mask=m, score=0.3 + 0.03 * k, source="model", state="proposed")
del m, yy, xx
with store.transaction() as s:
    mv = ModelVersion(size="tiny", checkpoint=None, note="ab"); s.add(mv); s.flush(); vid = mv.id
write_proposals(store, iid, inst, vid)
del inst

try:
    from annotator.page import Page
    def open_page():
        p = Page("ab", session=LabelSession(store, iid)); canvas.payload(p); return p
    def act(p, msg): canvas.apply(p, msg); canvas.payload(p)
except ImportError:  # the release before: the session is the page
    def open_page():
        ls = LabelSession(store, iid); canvas.payload(ls); return ls
    def act(ls, msg): canvas.apply(ls, msg); canvas.payload(ls)

open_page()
gc.collect(); base = rss(); t = time.perf_counter()
pages = [open_page() for _ in range(5)]
gc.collect(); per_page = (rss() - base) / 5; open_s = (time.perf_counter() - t) / 5
p = pages[0]
gc.collect(); base = rss(); t = time.perf_counter()
for k in range(20):
    act(p, {"op": "accept" if k % 2 else "reject", "index": k})
gc.collect(); per_review = (rss() - base) / 20; review_ms = (time.perf_counter() - t) * 1000 / 20
print(json.dumps({"page_mb": per_page / 2**20, "open_s": open_s, "review_mb": per_review / 2**20, "review_ms": review_ms}))
'''


def side(checkout: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    out = subprocess.run([sys.executable, "-c", SIDE], cwd=checkout, env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True, help="a checkout of the release to compare with")
    ap.add_argument("--pairs", type=int, default=3)
    a = ap.parse_args()
    print("| pair | before: MB a page / s to open / MB a review / ms a review | after: same | ratio MB a page, "
          "MB a review, open time |")
    print("|---|---|---|---|")
    for k in range(a.pairs):
        first, second = (a.before, ROOT) if k % 2 == 0 else (ROOT, a.before)  # sides alternate who goes first
        got = {first: side(first), second: side(second)}
        b, n = got[a.before], got[ROOT]
        fmt = lambda d: f"{d['page_mb']:.2f} / {d['open_s']:.3f} / {d['review_mb']:.3f} / {d['review_ms']:.1f}"  # noqa: E731
        print(f"| {k + 1} | {fmt(b)} | {fmt(n)} | {b['page_mb'] / max(n['page_mb'], 1e-3):.0f}x, "
              f"{b['review_mb'] / max(n['review_mb'], 1e-3):.0f}x, {b['open_s'] / n['open_s']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
