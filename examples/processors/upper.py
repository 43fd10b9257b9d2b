#!/usr/bin/env python3
"""A batchpipe exec processor: upper-cases every string in the item.

Run it with:  --processor "exec:python3 examples/processors/upper.py"

Protocol: one JSON item per line on stdin; exactly one line per item on
stdout, in order: {"output": ...} or {"error": {"message": ..., "permanent": ...}}.
With --items-per-call N a line is a JSON array of up to N items, answered by
one line holding an array of as many answers. With --item-context each item
comes in an envelope ({"batch_id", "shard", "index", "attempt", "key",
"input"}): the answer echoes its "index", which lets batchpipe check that
answers stay in step and so hand cheap items over many at a time. Logs go
to stderr (they land in the worker's log), never to stdout.
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


ENVELOPE = {"batch_id", "shard", "index", "attempt", "key", "input"}


def answer(item):
    if isinstance(item, dict) and item.keys() == ENVELOPE:
        return {"index": item["index"], **answer(item["input"])}
    if not isinstance(item, dict):
        return {"error": {"message": "want a JSON object", "permanent": True}}
    return {"output": upper(item)}


def main():
    # Read what has come (a round brings several lines at once), answer
    # every whole line, then write and flush the answers together: one
    # write per round, and nothing is left in a buffer while we wait.
    stdin, stdout = sys.stdin.buffer.raw, sys.stdout.buffer
    pending = []  # the start of a line still coming
    while chunk := stdin.read(1 << 16):
        pending.append(chunk)
        if b"\n" not in chunk:
            continue
        *lines, rest = b"".join(pending).split(b"\n")
        pending = [rest]
        respond(lines, stdout)
    respond([b"".join(pending)], stdout)  # a last line without a newline


def respond(lines, stdout):
    """Writes the answer to each line (blank ones skipped), then flushes."""
    for line in lines:
        if line.strip():
            v = json.loads(line)
            out = [answer(x) for x in v] if isinstance(v, list) else answer(v)
            stdout.write(json.dumps(out).encode() + b"\n")
    stdout.flush()  # batchpipe waits for these lines


if __name__ == "__main__":
    main()
