"""Why the 1000 requests/s, 0.5 -> 2 % cell of bench/decisions.py is one tick behind the oracle.

At that traffic both deciders usually decide within the first two 10 s ticks, so the median is
10 s or 20 s. This measures, for the analyzer's error e-process (with the grid the analyzer uses,
and with a few other grids for comparison) and for the oracle SPRT, the share of runs that decide
at the very first tick: canary 5 % of 1000 requests/s for 10 s, alpha as in policy `default`.

    .venv/bin/python -m bench.first_tick            # 4000 runs, a few seconds
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from analyzer.eprocess import ODDS_RATIO_GRID, EProcess, log_likelihood_ratios
from bench.results import write_section
from policies import load_policy


def _mixture_log_value(grid: NDArray[np.float64], n_c: int, x_c: int, n_s: int, x_s: int) -> float:
    """log of the equal-weight mixture over `grid` of analyzer.eprocess's likelihood ratios."""
    log_lr = log_likelihood_ratios(n_c, x_c, n_s, x_s, odds_ratios=grid.tolist())
    top = float(log_lr.max())
    return top + math.log(float(np.exp(log_lr - top).mean()))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    alpha = load_policy("default").alpha_errors
    threshold = -math.log(alpha)
    grids = {
        "8 from 1.5 to 12": np.geomspace(1.5, 12, 8),
        "12 from 1.25 to 20": np.geomspace(1.25, 20, 12),
        "6 from 1.5 to 8": np.geomspace(1.5, 8, 6),
    }
    rng = np.random.default_rng(args.seed)
    draws = [
        (int(rng.poisson(500)), int(rng.poisson(9500))) for _ in range(args.runs)
    ]  # canary 5 % and stable 95 % of 1000 rps over 10 s
    counts = [(n_c, int(rng.binomial(n_c, 0.02)), n_s, int(rng.binomial(n_s, 0.005))) for n_c, n_s in draws]
    oracle = sum(
        x_c * math.log(0.02 / 0.005) + (n_c - x_c) * math.log(0.98 / 0.995) >= threshold for n_c, x_c, _, _ in counts
    )
    rows = [f"| oracle SPRT (knows 0.5 % and 2 %) | {100 * oracle / args.runs:.1f} % |"]
    ours = sum(EProcess().updated(*c).crossed(alpha) for c in counts)  # the analyzer's own code
    rows.append(
        f"| autocanary's e-process (analyzer.eprocess, {len(ODDS_RATIO_GRID)} odds ratios 1.25-16) |"
        f" {100 * ours / args.runs:.1f} % |"
    )
    for name, grid in grids.items():
        decided = sum(_mixture_log_value(grid, *c) >= threshold for c in counts)
        rows.append(f"| the same e-process with {name} | {100 * decided / args.runs:.1f} % |")
    table = "| decider | decides at the first 10 s tick |\n|---|---|\n" + "\n".join(rows)
    print(table)
    if not args.no_write:
        note = (
            f"`python -m bench.first_tick --runs {args.runs}`: 1000 requests/s, canary 5 %, errors 0.5 -> 2 %,"
            f" alpha {alpha:g}. Above half, a median time to rollback is 10 s; below, 20 s."
        )
        write_section(Path(__file__).with_name("RESULTS.md"), "first_tick", "Deciding at the first tick", note, table)


if __name__ == "__main__":
    main()
