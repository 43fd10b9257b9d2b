#!/usr/bin/env python3
"""A batchpipe exec processor: upper-cases every string in the item.

Run it with:  --processor "exec:python3 examples/processors/upper.py"

Protocol: one JSON item per line on stdin; exactly one line per item on
stdout, in order: {"output": ...} or {"error": {"message": ..., "permanent": ...}}.
Logs go to stderr (they land in the worker's log), never to stdout.
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


for line in sys.stdin:
    item = json.loads(line)
    if not isinstance(item, dict):
        answer = {"error": {"message": "want a JSON object", "permanent": True}}
    else:
        answer = {"output": upper(item)}
    print(json.dumps(answer), flush=True)  # flush: batchpipe waits for this line
