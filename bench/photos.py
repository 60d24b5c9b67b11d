"""The label view at photo scale in a real browser (headless Debian Chromium, Playwright), issue 19:

- Next photo: five 6000x4000 (24 MP) JPEG photos with 20 proposals each; from the key `n` (moving on) to the
  first frame that draws the next photo (the picture decoded and on the canvas); target under 500 ms.
- Many instances: a 640x480 image with 20,000 annotations opened in the Label tab; the longest main-thread
  task (PerformanceObserver "longtask") while it opens, and canvas.js's own frame timer for hover and zoom
  (input event to the end of its frame); target: frames under 200 ms.

    .venv/bin/python bench/photos.py [--repeats 4]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.canvas import ST, Canvas, measured  # noqa: E402


def photo_store(root: Path, n_photos: int, width: int = 6000, height: int = 4000):
    """``n_photos`` photo-like JPEGs with 20 model proposals each (model.synthetic), in a new SQLite store."""
    from db.annotations import write_proposals
    from db.categories import add as add_category
    from db.ingest import ingest
    from db.schema import ModelVersion
    from db.store import Settings, Store
    from model.synthetic import photo_instances, write_photo

    store = Store(Settings(store_dir=root / "pstore"))
    files = [write_photo(root / f"photo{k}.jpg", width, height, seed=k) for k in range(n_photos)]
    added = ingest(store, files).added
    cid = add_category(store, "blob", "", [], [])
    with store.transaction() as s:
        mv = ModelVersion(size="tiny", checkpoint=None, note="bench")
        s.add(mv)
        s.flush()
        version = mv.id
    for k, (image_id, _) in enumerate(added):
        write_proposals(store, image_id, photo_instances(width, height, 20, cid, seed=k), version)
    return store


def many_store(root: Path, n: int = 20_000):
    """One 640x480 image with ``n`` small square proposals, in a new SQLite store."""
    from PIL import Image

    from db.annotations import write_proposals
    from db.categories import add as add_category
    from db.ingest import ingest
    from db.instances import Instances
    from db.crops import Crop
    from db.schema import ModelVersion
    from db.store import Settings, Store

    w, h = 640, 480
    store = Store(Settings(store_dir=root / "mstore"))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "m.png")
    (image_id, _), = ingest(store, [root / "m.png"]).added
    cid = add_category(store, "dot", "", [], [])
    rng = np.random.default_rng(1)
    inst = Instances(h, w)
    for _ in range(n):
        s = int(rng.integers(3, 12))
        x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        i = inst.add(cid, [x, y, s, s], score=float(rng.uniform(0.3, 0.99)), source="model", state="proposed")
        inst.set_crop(i, Crop(x, y, np.ones((s, s), bool)))
    with store.transaction() as s_:
        mv = ModelVersion(size="tiny", checkpoint=None, note="bench")
        s_.add(mv)
        s_.flush()
        version = mv.id
    write_proposals(store, image_id, inst, version)
    return store


def measure_next(page, url: str, repeats: int) -> list[float]:
    c = Canvas(page)
    page.goto(url)
    page.wait_for_selector("#label-canvas canvas")
    page.wait_for_function(f"{ST} && {ST}.picture.levels.length > 0", timeout=120_000)
    c.idle()
    out, arrived = [], []
    for _ in range(repeats):
        before = c.state("S.imageId")
        page.locator("#label-canvas canvas").hover()
        page.evaluate(f"() => {{ {ST}.__t0 = performance.now(); }}")
        page.keyboard.press("n")
        page.wait_for_function(f"{ST}.imageId !== {before}", timeout=120_000, polling=5)
        arrived.append(page.evaluate(f"() => performance.now() - {ST}.__t0"))
        page.wait_for_function(f"(() => {{ const S = {ST}; return S.imageId !== {before} && S.picture.levels.length > 0; }})()",
                               timeout=120_000)
        # the first frame after the picture arrived: the next animation frame's end
        ms = page.evaluate(f"""() => new Promise((done) => requestAnimationFrame(() =>
            setTimeout(() => done(performance.now() - {ST}.__t0), 0)))""")
        out.append(ms)
        c.idle()
    print("labels arrived after (ms):", [round(v) for v in arrived])
    return out


def measure_many(page, url: str) -> tuple[float, list[float], list[float], float]:
    c = Canvas(page)
    page.add_init_script("""window.__long = []; new PerformanceObserver((l) => { for (const e of l.getEntries())
        window.__long.push(e.duration); }).observe({type: 'longtask', buffered: true});""")
    page.goto(url)
    page.wait_for_selector("#label-canvas canvas")
    page.wait_for_function(f"{ST} && {ST}.data && {ST}.data.instances.length > 10000 && {ST}.picture.levels.length > 0",
                           timeout=180_000)
    c.idle()
    page.wait_for_timeout(500)
    opened = max(page.evaluate("window.__long.slice()"), default=0.0)
    print("taking the labels in (canvas.js receive, ms):", c.timings("receive"), "; long tasks while opening (ms):",
          page.evaluate("window.__long.slice()"))
    c.clear()
    box = page.locator("#label-canvas canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for k in range(20):
        page.mouse.move(cx + 7 * k, cy + 3 * k)
        page.wait_for_timeout(30)
    hover = c.timings("hover") or c.timings("move")
    c.clear()
    for k in range(10):
        page.mouse.wheel(0, -240 if k < 5 else 240)
        page.wait_for_timeout(60)
    zoom = c.timings("zoom")
    c.clear()
    page.mouse.move(cx, cy)
    for _ in range(5):  # accept the selected proposal and go to the next: the answer holds what changed
        page.keyboard.press("a")
        c.idle()
    accepts = c.timings("server:accept")
    n = len(c.state("S.data.instances"))
    accepted = c.state("S.data.instances.filter((it) => it.state === 'accepted').length")
    return opened, hover, zoom, n, accepts, accepted


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        nexts = measured(browser, photo_store(Path(tmp), args.repeats + 1), measure_next, args.repeats)
        opened, hover, zoom, n, accepts, accepted = measured(browser, many_store(Path(tmp)), measure_many)
        browser.close()
    print(f"machine: {platform.machine()}, python {platform.python_version()}, Chromium headless, viewport 1440x900")
    print(f"next 24 MP photo, key to first frame (ms): {', '.join(f'{v:.0f}' for v in nexts)}; median "
          f"{statistics.median(nexts):.0f}; target < 500")
    print(f"{n} instances: longest task while opening {opened:.0f} ms; hover frames median "
          f"{statistics.median(hover) if hover else float('nan'):.1f} ms, max {max(hover, default=float('nan')):.1f}; "
          f"zoom frames median {statistics.median(zoom) if zoom else float('nan'):.1f} ms, max "
          f"{max(zoom, default=float('nan')):.1f}; target < 200")
    print(f"{n} instances: accept (key a to the drawn answer) ms: {', '.join(f'{v:.0f}' for v in accepts)}; "
          f"{accepted} shown accepted after {len(accepts)} accepts")


if __name__ == "__main__":
    main()
