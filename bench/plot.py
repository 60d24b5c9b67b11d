"""A line chart as a PNG with pillow alone (the project's stack has no plotting library): one line per
series over integer x values, a y axis from 0, a legend."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]


def _ticks(top: float) -> list[float]:
    step = 10 ** len(str(int(max(top, 1e-9) / 5))) / 10 if top >= 5 else 0.1 if top > 0.5 else 0.05
    for m in (1, 2, 2.5, 5, 10):
        if top / (step * m) <= 6:
            step *= m
            break
    return [k * step for k in range(int(top / step) + 2) if k * step <= top * 1.0001 + step]


def line_chart(path: Path, title: str, x_label: str, y_label: str,
               series: dict[str, list[tuple[float, float | None]]], y_max: float | None = None) -> None:
    """Write ``series`` ({name: [(x, y), ...]}; a None y leaves a gap) as a PNG line chart."""
    w, h, left, right, top, bottom = 720, 420, 70, 190, 40, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    xs = sorted({x for pts in series.values() for x, _ in pts}) or [0, 1]
    ys = [y for pts in series.values() for _, y in pts if y is not None]
    y_top = y_max if y_max is not None else max(ys + [1e-9]) * 1.1
    ticks = _ticks(y_top)
    y_top = max(ticks[-1], y_top)
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1

    def px(x, y):
        return (left + (x - x0) / (x1 - x0) * (w - left - right), h - bottom - y / y_top * (h - top - bottom))

    d.text((left, 12), title, fill="black")
    d.line([px(x0, 0), px(x1, 0)], fill="black")
    d.line([px(x0, 0), px(x0, y_top)], fill="black")
    for t in ticks:
        p = px(x0, t)
        d.line([p, (p[0] - 4, p[1])], fill="black")
        d.line([(p[0] + 1, p[1]), (w - right, p[1])], fill=(230, 230, 230))
        d.text((p[0] - 45, p[1] - 6), f"{t:g}", fill="black")
    for x in xs:
        p = px(x, 0)
        d.line([p, (p[0], p[1] + 4)], fill="black")
        d.text((p[0] - 3, p[1] + 8), f"{x:g}", fill="black")
    d.text((left + (w - left - right) / 2 - 20, h - 22), x_label, fill="black")
    d.text((6, top - 20), y_label, fill="black")
    for k, (name, pts) in enumerate(series.items()):
        c = COLOURS[k % len(COLOURS)]
        run: list[tuple[float, float]] = []
        for x, y in sorted(pts, key=lambda p: p[0]) + [(None, None)]:
            if y is None:
                if len(run) > 1:
                    d.line(run, fill=c, width=2)
                run = []
                continue
            q = px(x, y)
            run.append(q)
            d.ellipse([q[0] - 3, q[1] - 3, q[0] + 3, q[1] + 3], fill=c)
        ly = top + 18 * k
        d.line([(w - right + 12, ly + 6), (w - right + 32, ly + 6)], fill=c, width=3)
        d.text((w - right + 38, ly), name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
