#!/usr/bin/env python3
"""A batchpipe exec processor: upper-cases every string in the item.

Run it with:  --processor "exec:python3 examples/processors/upper.py"

Protocol: one JSON item per line on stdin; exactly one line per item on
stdout, in order: {"output": ...} or {"error": {"message": ..., "permanent": ...}}.
With --items-per-call N a line is a JSON array of up to N items, answered by
one line holding an array of as many answers. Logs go to stderr (they land
in the worker's log), never to stdout.
"""
import json
import sys


def upper(v):
    if isinstance(v, str):
        return v.upper()
    if isinstance(v, list):
        return [upper(x) for x in v]
    if isinstance(v, dict):
        return {k: upper(x) for k, x in v.items()}
    return v


def answer(item):
    if not isinstance(item, dict):
        return {"error": {"message": "want a JSON object", "permanent": True}}
    return {"output": upper(item)}


for line in sys.stdin:
    v = json.loads(line)
    out = [answer(x) for x in v] if isinstance(v, list) else answer(v)
    print(json.dumps(out), flush=True)  # flush: batchpipe waits for this line
