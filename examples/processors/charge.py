#!/usr/bin/env python3
"""A batchpipe exec processor with a side effect, keyed by the item.

Run it with:  --item-context --processor "exec:python3 examples/processors/charge.py LEDGER"

Each line is an envelope {"batch_id", "index", "attempt", "key", "input"}
(--item-context). The "charge" is a line appended to LEDGER, once per key:
an item that runs again (a retry, a worker killed mid-shard, a resubmit of
the same batch id) finds its key there and answers what was recorded,
charging nothing twice. A real processor passes the key as the
idempotency key of the API it calls. The answer echoes the index, so an
answer can never be taken for another item's.
"""
import fcntl
import json
import sys

ledger_path = sys.argv[1]


def charge(env):
    key = env["key"]
    with open(ledger_path, "a+") as ledger:
        fcntl.flock(ledger, fcntl.LOCK_EX)  # processes of the pool share it
        ledger.seek(0)
        for line in ledger:
            entry = json.loads(line)
            if entry["key"] == key:
                return dict(entry, replayed=True)
        entry = {"key": key, "amount_cents": 100 + env["index"] % 900}
        ledger.write(json.dumps(entry) + "\n")
        return entry


for line in sys.stdin:
    env = json.loads(line)
    if "key" not in env:
        answer = {"error": {"message": "run with --item-context", "permanent": True}}
    else:
        answer = {"index": env["index"], "output": charge(env)}
    print(json.dumps(answer), flush=True)
