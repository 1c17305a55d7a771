#!/usr/bin/env python3
"""Does this machine make idle memory slow to touch again, and does touching it keep it fast?

Two 1 GiB buffers are filled (resident) and read once at 20,000 random pages; then, for the idle
spell, buffer "warm" is read (one value per page) every 30 s, as `memory_warm_interval_secs`
does, and buffer "idle" is left alone. At the end each is read again at random pages. On a host
that ages idle pages (a DAMON page-out scheme, say) "idle" comes back much slower than "warm".

    python3 scripts/bench-idle-memory.py [--minutes 10]

Needs numpy (the venv of scripts/setup.sh has it).
"""
import argparse
import time

import numpy as np

PAGE_FLOATS = 4096 // 4


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--warm-every", type=float, default=30, help="seconds between reads of 'warm'")
    args = parser.parse_args()

    pages = 1024**3 // 4096
    buffers = {name: np.ones(pages * PAGE_FLOATS, dtype=np.float32) for name in ("idle", "warm")}
    rng = np.random.default_rng(7)
    sample = {name: rng.permutation(pages)[:20_000] * PAGE_FLOATS for name in buffers}

    def random_read_ms(name):
        started = time.perf_counter()
        float(buffers[name][sample[name]].sum())
        return (time.perf_counter() - started) * 1000

    before = {name: random_read_ms(name) for name in buffers}
    deadline = time.monotonic() + args.minutes * 60
    while time.monotonic() < deadline:
        time.sleep(min(args.warm_every, max(0.0, deadline - time.monotonic())))
        float(buffers["warm"][::PAGE_FLOATS].sum())
    after = {name: random_read_ms(name) for name in buffers}
    print(f"20,000 random pages of 1 GiB, read before and after {args.minutes:g} idle minutes:")
    for name in buffers:
        note = f"read every {args.warm_every:g} s" if name == "warm" else "left alone"
        print(f"  {name} ({note}): {before[name]:.2f} ms -> {after[name]:.2f} ms")


if __name__ == "__main__":
    main()
