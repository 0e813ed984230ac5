"""Before/after: two sets of benchmark runs (results.json of python -m benchmarks.run), compared
figure by figure.

    python -m benchmarks.compare --before OLD1 OLD2 --after NEW1 NEW2

Each figure of a set is the best (lowest time) of its runs: on a shared machine a run is only
ever slowed down, never sped up, by what else runs. Two columns per figure: the time after over
the time before, and the same for the time over the same run's copy of the same bytes (where the
benchmark measures one), which cancels a machine that got slower or faster between runs. Prints a
Markdown table and the worst of each column.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

Figure = tuple[str, float, float | None]  # name, time (us), time over the run's copy


def figures(results: dict) -> Iterator[Figure]:
    for row in results["rotation"]:
        yield (
            f"rotate_ {row['dtype']} {row['tokens']} tokens",
            row["yarn_ext_us"],
            row["yarn_ext_us"] / row["copy_us"],
        )
    for row in results.get("layouts", []):
        yield (
            f"layout {row['layout']} {row['dtype']} {row['tokens']} tokens",
            row["yarn_ext_us"],
            row["yarn_ext_us"] / row["copy_us"],
        )
    for dtype, us in results["one_token_call_us"].items():
        yield f"one-token call {dtype}", us, None
    for row in results["construction"]:
        yield f"cache construction {row['length']} positions", row["yarn_ext_us"], None


def best(paths: list[Path]) -> dict[str, tuple[float, float | None]]:
    merged: dict[str, tuple[float, float | None]] = {}
    for path in paths:
        results = json.loads((path / "results.json").read_text())
        for name, us, of_copy in figures(results):
            old = merged.get(name)
            if old is None:
                merged[name] = (us, of_copy)
                continue
            ratio = of_copy if old[1] is None or of_copy is None else min(old[1], of_copy)
            merged[name] = (min(old[0], us), ratio)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, nargs="+", required=True)
    parser.add_argument("--after", type=Path, nargs="+", required=True)
    args = parser.parse_args()
    before, after = best(args.before), best(args.after)
    print("| figure | before us | after us | after / before | of copy before | of copy after |")
    print("|---|---|---|---|---|---|")
    worst_time, worst_copy = 0.0, 0.0
    for name, (us_before, copy_before) in before.items():
        if name not in after:
            continue
        us_after, copy_after = after[name]
        worst_time = max(worst_time, us_after / us_before)
        cells = [name, f"{us_before:.2f}", f"{us_after:.2f}", f"{us_after / us_before:.3f}"]
        if copy_before is not None and copy_after is not None:
            worst_copy = max(worst_copy, copy_after / copy_before)
            cells += [f"{copy_before:.3f}", f"{copy_after:.3f}"]
        else:
            cells += ["", ""]
        print("| " + " | ".join(cells) + " |")
    print(f"\nworst after/before: {worst_time:.3f}; worst of-copy after/before: {worst_copy:.3f}")


if __name__ == "__main__":
    main()
