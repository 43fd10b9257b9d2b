#!/usr/bin/env node
// Starts a batchpipe batch from Node with nothing but @temporalio/client and
// the public JSON contract of BatchWorkflow (docs/contract.md,
// schema/batch-input.json): no Go, no batchpipe CLI. A batchpipe worker
// stages the input object, runs the batch and writes the manifest; this
// program starts BatchWorkflow, prints the "progress" query every second and
// prints the manifest key when the batch finishes.
//
//   node start.mjs --store file:///abs/blobs --processor example file:///abs/blobs/in.jsonl
//
// Exit codes follow `submit`: 0 succeeded, 1 failed or canceled (or an
// operational error), 2 bad usage or an input the workflow refused
// (InvalidBatchInput), 3 completed with failed items.

import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import {
  ApplicationFailure,
  CancelledFailure,
  Client,
  Connection,
  WorkflowExecutionAlreadyStartedError,
  WorkflowFailedError,
} from '@temporalio/client';

const usage = `usage: node start.mjs [flags] INPUT_URL

Starts BatchWorkflow on a batchpipe worker's task queue for the input object
INPUT_URL (s3://bucket/key, minio://host:port/bucket/key, file:///abs/in.jsonl),
polls its progress every second and prints the manifest key when it finishes.

flags (environment variable in brackets):
  --store URL           store the batch writes to, e.g. s3://bucket/prefix   [BATCHPIPE_STORE]
  --processor NAME      processor registered on the worker, e.g. example   [BATCHPIPE_PROCESSOR]
  --batch-id ID         batch id = workflow id (default ts-<time>-<random>)   [BATCH_ID]
  --task-queue NAME     (default batchpipe)                                   [BATCHPIPE_TASK_QUEUE]
  --shard-size N        items per shard (default: sized from the input)
  --concurrency N       shards in flight (default 32)
  --item-timeout D      per attempt, e.g. 30s (default 1m)
  --max-failures N|N%   stop once more items failed (default: no limit)
  --options-json JSON   more keys merged into "options", as they are        [EXTRA_OPTIONS_JSON]
  --attach              if the batch id exists already, wait for that batch
  --poll-interval MS    progress query interval (default 1000)
Temporal: TEMPORAL_ADDRESS (default 127.0.0.1:7233), TEMPORAL_NAMESPACE (default "default").

The input URL is INPUT_URL or BATCHPIPE_INPUT_URL.`;

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
const EXIT_WITH_FAILURES = 3;

function fail(code, msg) {
  console.error(msg);
  process.exit(code);
}

function positiveInt(flag, v) {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) fail(EXIT_USAGE, `${flag}: want a whole number of at least 1, got ${JSON.stringify(v)}`);
  return n;
}

// "10" → {"count": 10}, "5%" → {"percent": 5}: the contract's max_failures.
function failureLimit(v) {
  if (v === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(v);
  if (!m || (!m[2] && !Number.isInteger(Number(m[1])))) {
    fail(EXIT_USAGE, `--max-failures: want a count like 10 or a percentage like 5%, got ${JSON.stringify(v)}`);
  }
  return m[2] ? { percent: Number(m[1]) } : { count: Number(m[1]) };
}

function defaultBatchID() {
  const t = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `ts-${t}-${randomBytes(3).toString('hex')}`;
}

let args;
try {
  args = parseArgs({
    allowPositionals: true,
    options: {
      store: { type: 'string' },
      processor: { type: 'string' },
      'batch-id': { type: 'string' },
      'task-queue': { type: 'string' },
      'shard-size': { type: 'string' },
      concurrency: { type: 'string' },
      'item-timeout': { type: 'string' },
      'max-failures': { type: 'string' },
      'options-json': { type: 'string' },
      attach: { type: 'boolean' },
      'poll-interval': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
} catch (err) {
  fail(EXIT_USAGE, `${err.message}\n\n${usage}`);
}
const flags = args.values;
if (flags.help) {
  console.log(usage);
  process.exit(EXIT_OK);
}
const env = process.env;
const inputURL = args.positionals[0] ?? env.BATCHPIPE_INPUT_URL;
const store = flags.store ?? env.BATCHPIPE_STORE;
const processor = flags.processor ?? env.BATCHPIPE_PROCESSOR;
if (args.positionals.length > 1) fail(EXIT_USAGE, `want one input URL, got ${args.positionals.length}\n\n${usage}`);
if (!inputURL) fail(EXIT_USAGE, `no input URL (argument or BATCHPIPE_INPUT_URL)\n\n${usage}`);
if (!store) fail(EXIT_USAGE, `no store (--store or BATCHPIPE_STORE)\n\n${usage}`);
if (!processor) fail(EXIT_USAGE, `no processor (--processor or BATCHPIPE_PROCESSOR)\n\n${usage}`);
const batchID = flags['batch-id'] ?? env.BATCH_ID ?? defaultBatchID();
const taskQueue = flags['task-queue'] ?? env.BATCHPIPE_TASK_QUEUE ?? 'batchpipe';
const pollMs = positiveInt('--poll-interval', flags['poll-interval']) ?? 1000;

// The workflow input: the four keys a caller needs, plus any options given.
// Absent options get the worker's defaults; unknown keys fail the batch.
const options = { processor };
const shardSize = positiveInt('--shard-size', flags['shard-size']);
if (shardSize !== undefined) options.shard_size = shardSize;
const concurrency = positiveInt('--concurrency', flags.concurrency);
if (concurrency !== undefined) options.concurrency = concurrency;
if (flags['item-timeout'] !== undefined) options.item_timeout = flags['item-timeout']; // a Go duration string
const maxFailures = failureLimit(flags['max-failures']);
if (maxFailures !== undefined) options.max_failures = maxFailures;
const extra = flags['options-json'] ?? env.EXTRA_OPTIONS_JSON;
if (extra) {
  let more;
  try {
    more = JSON.parse(extra);
  } catch (err) {
    fail(EXIT_USAGE, `--options-json / EXTRA_OPTIONS_JSON: ${err.message}`);
  }
  if (more === null || typeof more !== 'object' || Array.isArray(more)) {
    fail(EXIT_USAGE, '--options-json / EXTRA_OPTIONS_JSON: want a JSON object');
  }
  Object.assign(options, more);
}
const input = { batch_id: batchID, store, input_url: inputURL, options };

const address = env.TEMPORAL_ADDRESS || '127.0.0.1:7233';
const namespace = env.TEMPORAL_NAMESPACE || 'default';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// describe names the failure a client sees: for a refused input, an
// ApplicationFailure of type InvalidBatchInput whose message names the field.
function describe(err) {
  let e = err instanceof WorkflowFailedError && err.cause ? err.cause : err;
  if (e instanceof ApplicationFailure) return `${e.type ?? 'ApplicationFailure'}: ${e.message}`;
  if (e instanceof CancelledFailure) return `canceled: ${e.message}`;
  return e?.message ?? String(e);
}

function printResult(res) {
  const c = res.counts ?? {};
  console.log(`status: ${res.status} (items ${c.items}, succeeded ${c.succeeded}, failed ${c.failed}; ${res.runs} run(s))`);
  // The key is an object key within the store's bucket, the store's prefix included.
  console.log(`manifest key: ${res.manifest_key}`);
}

async function main() {
  let connection;
  try {
    connection = await Connection.connect({ address, connectTimeout: '10s' });
  } catch (err) {
    fail(EXIT_FAILED, `cannot reach Temporal at ${address}: ${err.message}`);
  }
  try {
    const client = new Client({ connection, namespace });
    let handle;
    try {
      handle = await client.workflow.start('BatchWorkflow', {
        taskQueue,
        workflowId: batchID, // the batch id is the workflow id: one batch per id
        // A batch id is claimed once, forever: a second start with the same
        // id fails whether the first batch is running or finished.
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
        workflowIdConflictPolicy: 'FAIL',
        args: [input],
      });
      console.log(`started batch ${batchID} (workflow BatchWorkflow, task queue ${taskQueue}, ${address})`);
      console.log(`input: ${JSON.stringify(input)}`);
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      if (!flags.attach) {
        fail(EXIT_FAILED, `batch ${batchID} was started before (WorkflowExecutionAlreadyStarted); pick another --batch-id, or --attach to wait for it`);
      }
      handle = client.workflow.getHandle(batchID);
      console.log(`batch ${batchID} exists; waiting for it (its input is not compared with this one)`);
    }

    // Poll the progress query until the result is in. A query can fail
    // before the first workflow task ran or after the batch ended; skip it.
    let finished = false;
    const result = handle.result().finally(() => {
      finished = true;
    });
    const poll = (async () => {
      while (!finished) {
        try {
          const p = await handle.query('progress');
          if (finished) break;
          // Until a worker has staged the input, items and shards are 0.
          const detail = p.shards === 0 && !p.stopping
            ? 'staging the input'
            : `succeeded ${p.succeeded}, failed ${p.failed}; shards ${p.shards_done}/${p.shards}, ${p.in_flight} in flight; run ${p.run}`;
          console.log(`progress: ${p.done}/${p.items} items (${detail})${p.stopping ? ` stopping: ${p.stopping}` : ''}`);
        } catch {
          // not answerable yet (or any more)
        }
        if (!finished) await sleep(pollMs);
      }
    })();

    let res;
    try {
      res = await result;
    } catch (err) {
      await poll;
      const e = err instanceof WorkflowFailedError ? err.cause : undefined;
      if (e instanceof CancelledFailure) {
        // A canceled batch still writes its manifest; the result is the failure's details.
        const r = e.details?.[0];
        if (r?.manifest_key) printResult(r);
        fail(EXIT_FAILED, `batch ${batchID} was canceled`);
      }
      const code = e instanceof ApplicationFailure && e.type === 'InvalidBatchInput' ? EXIT_USAGE : EXIT_FAILED;
      fail(code, `batch ${batchID} failed: ${describe(err)}`);
    }
    await poll;
    printResult(res);
    switch (res.status) {
      case 'succeeded':
        return EXIT_OK;
      case 'completed_with_failures':
        return EXIT_WITH_FAILURES;
      default:
        // Why is in the manifest's "error" (a bad input object, a failed
        // shard, the max_failures limit); the result carries only counts.
        console.error(`batch ${batchID} ${res.status}: see "error" in the manifest ${res.manifest_key}`);
        return EXIT_FAILED;
    }
  } finally {
    await connection.close();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => fail(EXIT_FAILED, `error: ${describe(err)}`),
);
