#!/usr/bin/env python3
"""The plain-Python baseline of `bench` (bench/RESULTS.md, "A Python
function"): examples/processors/upper.py's `upper` applied to every line of a
JSON Lines file with multiprocessing.Pool over all CPUs, one JSON line per
item written to OUTPUT in input order. No Temporal, no durability, no
retries: what a user would write instead of a batch.

    plain_upper.py INPUT OUTPUT [--chunksize N] [--processes N] [--upper PATH]

Prints one JSON line to stdout: {"items": N, "processes": P, "chunksize": C}.
"""
import argparse
import importlib.util
import json
import multiprocessing
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def load_upper(path):
    """Imports upper.py for its functions (its read loop runs only as a
    script)."""
    spec = importlib.util.spec_from_file_location("upper_processor", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


upper = None  # set in the parent before the pool forks


def process(line):
    return json.dumps(upper(json.loads(line)))


def main():
    global upper
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--chunksize", type=int, default=1000)
    ap.add_argument("--processes", type=int, default=os.cpu_count())
    ap.add_argument("--upper", default=os.path.join(HERE, "..", "examples", "processors", "upper.py"))
    args = ap.parse_args()
    upper = load_upper(args.upper).upper

    n = 0
    # fork: the workers inherit upper (and start in milliseconds).
    ctx = multiprocessing.get_context("fork")
    with open(args.input) as inp, open(args.output, "w") as out, ctx.Pool(args.processes) as pool:
        for line in pool.imap(process, inp, chunksize=args.chunksize):
            out.write(line)
            out.write("\n")
            n += 1
    print(json.dumps({"items": n, "processes": args.processes, "chunksize": args.chunksize}))


if __name__ == "__main__":
    main()
