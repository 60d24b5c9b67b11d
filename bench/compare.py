"""Run one benchmark script on an earlier commit and on the working tree, alternating, in one run, and
report each figure per pair (this tree / that commit). Both sides run the same script with the same
arguments against their own code, each in a fresh process.

    .venv/bin/python bench/compare.py REF [--rounds 5] bench/ui.py --repeats 10
    .venv/bin/python bench/compare.py REF --rounds 3 bench/store.py

Figures are read from the script's output: every "NAME median X ms" (bench/ui.py) and every
"NAME: ... in X s" (bench/store.py).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = [re.compile(r"^(?P<name>[a-z][a-z -]*?)\s+median\s+(?P<value>[0-9.]+) ms"),
            re.compile(r"^(?P<name>[a-z][a-z-]*): .* in (?P<value>[0-9.]+) s$")]


def figures(output: str) -> dict[str, float]:
    out = {}
    for line in output.splitlines():
        for pat in PATTERNS:
            m = pat.match(line.strip())
            if m:
                out[m["name"].strip()] = float(m["value"])
    return out


def run(tree: Path, script: str, args: list[str]) -> dict[str, float]:
    res = subprocess.run([sys.executable, str(tree / script), *args], cwd=tree, capture_output=True, text=True,
                         check=True)
    return figures(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ref", help="the earlier commit to compare against")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("script", help="benchmark script, relative to the repository root")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", str(other), a.ref], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            pairs = []
            for k in range(a.rounds):
                sides = [("ref", other), ("this", ROOT)] if k % 2 == 0 else [("this", ROOT), ("ref", other)]
                got = {name: run(tree, a.script, a.args) for name, tree in sides}
                pairs.append(got)
                print(f"round {k + 1}: " + "  ".join(f"{n} this {got['this'][n]:.1f} / ref {got['ref'][n]:.1f}"
                                                      for n in got["this"] if n in got["ref"]), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, capture_output=True)
    names = [n for n in pairs[0]["this"] if n in pairs[0]["ref"]]
    print(f"\n{a.script} {' '.join(a.args)}: this tree vs {a.ref}, {a.rounds} alternating rounds")
    print(f"{'figure':<14} {'this (median)':>14} {'ref (median)':>14} {'ratio per pair (this/ref)':>30}")
    for n in names:
        this = [p["this"][n] for p in pairs]
        ref = [p["ref"][n] for p in pairs]
        ratios = [t / r for t, r in zip(this, ref) if r]
        print(f"{n:<14} {statistics.median(this):14.2f} {statistics.median(ref):14.2f} "
              f"{'  '.join(f'{x:.2f}' for x in ratios):>30}  median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
