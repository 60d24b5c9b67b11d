"""bench/gpu.sh's two helpers (issue 22 part 5):

    python bench/gpu.py peak SCRIPT ARGS...   # run a bench script, then print its peak GPU memory
    python bench/gpu.py table LOG_DIR         # the markdown table of propose.log, train.log and assist.log

``peak`` runs the script as ``__main__`` in this process and prints ``RESULT peak {"peak_gpu_mb": ...}``
(torch.cuda.max_memory_allocated over the whole script) for a script that does not print it itself
(bench/propose.py). ``table`` reads the scripts' own summary lines (bench/propose.py's text, the
``RESULT <name> {json}`` lines of bench/train.py and bench/assist.py) and prints one table naming the card,
the date and torch's version; a number a log lacks shows as "?".
"""

from __future__ import annotations

import json
import re
import runpy
import sys
import time
from pathlib import Path


def peak(argv: list[str]) -> None:
    import torch

    script = argv[0]
    sys.argv = list(argv)
    sys.path.insert(0, str(Path(script).resolve().parent.parent))
    runpy.run_path(script, run_name="__main__")
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        print("RESULT peak " + json.dumps({"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2 ** 20}), flush=True)


def results(text: str) -> dict[str, dict]:
    """The ``RESULT <name> {json}`` lines of a log, by name."""
    out = {}
    for m in re.finditer(r"^RESULT (\w+) (\{.*\})$", text, re.M):
        out[m.group(1)] = json.loads(m.group(2))
    return out


def propose_numbers(text: str) -> dict[str, float]:
    """bench/propose.py's summary: batch-1 latency medians (ms), batch-B throughput (img/s), the medians of
    the per-pair speed-ups, and B."""
    found: dict[str, float] = {}
    patterns = {
        ("plain_ms", "ours_ms"): r"batch-1 latency per image: plain median ([\d.]+) ms.*?maskloop median ([\d.]+) ms",
        ("latency_speedup",): r"batch-1 speed-up per pair.*?median ([\d.]+)x",
        ("batch", "plain_ips", "ours_ips"): r"batch (\d+) throughput: plain ([\d.]+) img/s, maskloop ([\d.]+) img/s",
        ("throughput_speedup",): r"batch \d+ speed-up per pair.*?median ([\d.]+)x",
    }
    for names, pattern in patterns.items():
        m = re.search(pattern, text)
        if m:
            found.update({n: float(v) for n, v in zip(names, m.groups())})
    return found


def _f(v, fmt: str = "{:.1f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else "?"


def table(folder: str) -> str:
    import torch

    logs = {name: (Path(folder) / f"{name}.log") for name in ("propose", "train", "assist")}
    text = {name: p.read_text(errors="replace") if p.exists() else "" for name, p in logs.items()}
    prop = propose_numbers(text["propose"])
    prop_peak = results(text["propose"]).get("peak", {}).get("peak_gpu_mb")
    train = results(text["train"]).get("train", {})
    assist = results(text["assist"]).get("assist", {})
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (no GPU: --quick)"
    batch = int(prop["batch"]) if "batch" in prop else "?"
    mb = "{:.0f} MB"
    rows = [
        ("proposals, batch 1: ms per image (median)", _f(prop.get("plain_ms")), _f(prop.get("ours_ms")),
         _f(prop.get("latency_speedup"), "{:.2f}x"),
         _f(prop_peak, mb) + " (whole run, both sides)" if prop_peak is not None else ""),
        (f"proposals, batch {batch}: images per second", _f(prop.get("plain_ips"), "{:.2f}"),
         _f(prop.get("ours_ips"), "{:.2f}"), _f(prop.get("throughput_speedup"), "{:.2f}x"), ""),
        (f"training, batch {train.get('batch_size', '?')}: iterations per second", _f(train.get("plain_it_s"), "{:.2f}"),
         _f(train.get("ours_it_s"), "{:.2f}"), _f(train.get("speedup"), "{:.2f}x"),
         f"{_f(train.get('plain_peak_gpu_mb'), mb)} / {_f(train.get('ours_peak_gpu_mb'), mb)}"
         if "ours_peak_gpu_mb" in train else ""),
        ("assist: ms per box (median, features cached)", "", _f(assist.get("box_ms")), "",
         _f(assist.get("peak_gpu_mb"), mb) if "peak_gpu_mb" in assist else ""),
        ("assist: ms per click (median)", "", _f(assist.get("click_ms")), "", ""),
        ("assist: features, ms per image (median)", "", _f(assist.get("features_ms")), "",
         _f(assist.get("cached_mb_per_image"), "{:.1f} MB cached per image")),
    ]
    lines = [f"**{card}**, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}", "",
             "| measure | baseline | maskloop | baseline / maskloop | peak GPU memory (baseline / maskloop) |",
             "| --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in ("peak", "table"):
        sys.exit(__doc__)
    if sys.argv[1] == "peak":
        peak(sys.argv[2:])
    else:
        print(table(sys.argv[2]))


if __name__ == "__main__":
    main()
