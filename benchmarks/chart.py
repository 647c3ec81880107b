"""Draw the benchmark chart from a results file: ``python benchmarks/chart.py``.

Reads the JSON that ``bench_hit_path.py --json FILE`` writes (default
``benchmarks/results.json``) and writes a PNG (default ``docs/benchmarks.png``): one
panel per section, each contender's median cost per hit as a multiple of the section's
floor (log scale), cachekit's bar highlighted, and each peer labelled with how many times
cachekit's cost it has. Needs matplotlib (the ``bench`` extra).

    taskset -c 1 python benchmarks/bench_hit_path.py --json benchmarks/results.json
    python benchmarks/chart.py
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("Memory backend, sync hit", "Memory backend, async hit", "Redis, sync hit",
            "Redis, async hit")  # fmt: skip
CACHEKIT, PEER, FLOOR = "#d9480f", "#868e96", "#ced4da"


def rows(section: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(label, multiple of the floor, multiple of cachekit, kind) per contender, the floor
    first, then cachekit, then the peers from the cheapest."""
    contenders = section["contenders"]
    ours = next((c for c in contenders if c["cachekit"]), None)
    out = []
    for c in contenders:
        kind = "floor" if c["floor"] else "cachekit" if c["cachekit"] else "peer"
        vs_ours = math.nan
        if ours and c.get("samples") and ours.get("samples"):  # paired by round
            vs_ours = statistics.median(a / b for a, b in zip(c["samples"], ours["samples"]))
        elif ours:
            vs_ours = c["median_ns"] / ours["median_ns"]
        out.append((c["name"], c["vs_floor"], vs_ours, kind))
    order = {"floor": 0, "cachekit": 1, "peer": 2}
    return sorted(out, key=lambda r: (order[r[3]], r[1]))


def draw(results: dict[str, Any], out: Path, sections: tuple[str, ...] = SECTIONS) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # a file, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    wanted = [s for name in sections for s in results["sections"] if s["section"] == name]
    if not wanted:
        raise SystemExit(f"none of {', '.join(sections)} in the results file")
    heights = [len(s["contenders"]) for s in wanted]
    fig, axes = plt.subplots(
        len(wanted), 1, figsize=(11, 0.36 * sum(heights) + 0.9 * len(wanted) + 0.6),
        gridspec_kw={"height_ratios": heights}, squeeze=False,
    )  # fmt: skip
    for ax, section in zip(axes[:, 0], wanted):
        data = rows(section)
        labels = [r[0] for r in data]
        values = [r[1] for r in data]
        colors = [{"floor": FLOOR, "cachekit": CACHEKIT, "peer": PEER}[r[3]] for r in data]
        ax.barh(range(len(data)), values, color=colors)
        ax.set_yticks(range(len(data)), labels, fontsize=9)
        ax.invert_yaxis()
        ax.set_xscale("log")
        right = max(values) * 8
        ax.set_xlim(0.8, right)
        if max(values) < 10:  # less than a decade: ticks between the powers of ten
            ax.set_xticks([t for t in (1, 1.25, 1.5, 2, 3, 5, 10, 20) if t < right])
        ax.set_title(section["section"], loc="left", fontsize=11, fontweight="bold")
        for y, (_, floor_x, ours_x, kind) in enumerate(data):
            text = f"{floor_x:.2f}x floor"
            if kind == "peer" and not math.isnan(ours_x):
                text += f"  ({ours_x:.1f}x cachekit)"
            ax.text(floor_x * 1.06, y, text, va="center", fontsize=8)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", which="major", alpha=0.3)
    axes[-1, 0].set_xlabel(
        "median time per hit as a multiple of the floor (log scale, lower is better)\n"
        "in brackets: a peer's time over cachekit's (median of the per-round ratios)",
        fontsize=9,
    )
    fig.suptitle(f"cachekit hit path vs peers: {results.get('machine', '')}, "
                 f"{results.get('pinned', '')}", fontsize=9)  # fmt: skip
    fig.subplots_adjust(left=0.3, right=0.97, top=1 - 0.75 / fig.get_figheight(),
                        bottom=0.95 / fig.get_figheight(), hspace=0.6)  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default=str(ROOT / "benchmarks" / "results.json"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.png"))
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text())
    print(draw(results, Path(args.out)))


if __name__ == "__main__":
    main()
