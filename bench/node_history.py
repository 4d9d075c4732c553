#!/usr/bin/env python3
"""What qx-node's kept hour of host rates costs (``qx_node.telemetry.StatsHistory``, the dashboard's charts).

Measures, in this process: the ring's memory (its array buffers, fixed), the CPU time of one background
sample (psutil's CPU times, disk and network counters and memory; the sampler's rate window is a sleep and
is not counted) and what that is per core at the node's 5 s interval, and the CPU time of one
``GET /v1/host/metrics/history`` body (``series()`` of a full ring, 720 samples).

Usage: .venv/bin/python bench/node_history.py [--samples 50]
"""

from __future__ import annotations

import argparse
import time

from qx_node.telemetry import StatsHistory, StatsSampler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50)
    args = ap.parse_args()
    h = StatsHistory(5.0)
    h.sample()
    t0 = time.process_time()
    for _ in range(args.samples):  # each waits for the sampler's 0.2 s rate window (a sleep: no CPU)
        h.sample()
    per_sample = (time.process_time() - t0) / args.samples
    stats = StatsSampler().stats()
    for i in range(h.capacity):  # a full ring, for series()
        h.record(float(i), stats)
    t0 = time.process_time()
    for _ in range(100):
        h.series()
    per_series = (time.process_time() - t0) / 100
    print(f"ring: {h.capacity} samples, {h.nbytes} bytes")
    print(f"one sample: {per_sample * 1e3:.2f} ms CPU = {per_sample / h.interval * 100:.3f} % of a core at "
          f"{h.interval:g} s")
    print(f"series() of a full ring: {per_series * 1e3:.2f} ms CPU")


if __name__ == "__main__":
    main()
