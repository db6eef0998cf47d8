"""Cache stress (issue 11): 4 processes on a new, empty feature cache at once, 100 times.

Each round, 4 processes (spawned once, synchronised by a barrier) open the same new cache
at the same moment (the creation race that lost writes), then each writes 500 entries in
20 transactions, reading its own rows back after every write and peeking at the others'.
Counted: failed writes, wrong or missing read-backs, and (afterwards, from a fresh reader)
entries missing from each round's cache. The same worker as
``tests/test_cache.py::test_four_processes_on_a_new_cache_lose_nothing`` (which runs 40
lighter rounds, 125 entries per process each, in the suite).

Usage::

    PYTHONPATH=src python benchmarks/bench_cache_stress.py [--rounds 100]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import machine, stamp, write_section  # noqa: E402
from test_cache import _stress_worker  # noqa: E402

from mmfuse.cache import FeatureCache  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mmf-stress-"))
    ctx = multiprocessing.get_context("spawn")
    barrier, failures = ctx.Barrier(4), ctx.Queue()
    started = time.perf_counter()
    procs = [ctx.Process(target=_stress_worker, args=(str(root), tag, args.rounds, barrier,
                                                      failures)) for tag in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    seconds = time.perf_counter() - started
    problems = []
    while not failures.empty():
        problems.append(failures.get())
    keys = [f"{t}-{b}-{j}" for t in range(4) for b in range(20) for j in range(25)]
    missing = {}
    for r in range(args.rounds):
        got = len(FeatureCache(root / f"round-{r}").get_many("enc", keys, 16))
        if got != len(keys):
            missing[r] = len(keys) - got
    shutil.rmtree(root, ignore_errors=True)
    result = {"rounds": args.rounds, "processes": 4, "entries_per_round": len(keys),
              "seconds": seconds, "exit_codes": [p.exitcode for p in procs],
              "worker_problems": problems, "rounds_with_missing_entries": missing}
    print(json.dumps(result))
    ok = not problems and not missing and all(p.exitcode == 0 for p in procs)
    md = "\n".join([
        "# Feature cache under concurrency (issue 11)", "",
        f"{stamp()} on {machine()}. `benchmarks/bench_cache_stress.py --rounds "
        f"{args.rounds}`: {args.rounds} rounds, each 4 processes opening the same new, empty "
        "cache at once and writing 500 entries each (20 transactions, reads between "
        "writes).", "",
        f"- entries written: {args.rounds * len(keys):,}; wall time {seconds:.0f} s",
        f"- failed writes or wrong/missing read-backs: {len(problems)}",
        f"- rounds with entries missing afterwards: {len(missing)}",
        f"- result: {'0 lost or wrong entries' if ok else 'FAILED'}",
    ])
    write_section("cache_stress", md)
    (HERE / "results" / "cache_stress.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
