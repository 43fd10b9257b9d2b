// Reads a batchpipe batch's results with DuckDB (@duckdb/node-api), running
// results.sql, the recipe: read_json over the keys the manifest lists.
//
//   node results.mjs ROOT MANIFEST
//
// ROOT is what the manifest's keys are relative to (a file:// store's
// directory); MANIFEST the batch's manifest.json. It prints one JSON object:
// the rows read, their distinct indexes, the rows by status and the lines
// of the batch's failures object.
import { readFile } from 'node:fs/promises';
import { DuckDBInstance } from '@duckdb/node-api';

const [root, manifest] = process.argv.slice(2);
if (!root || !manifest) {
  console.error('usage: node results.mjs ROOT MANIFEST');
  process.exit(2);
}
const quote = (s) => `'${s.replaceAll("'", "''")}'`;

const db = await DuckDBInstance.create(':memory:');
const conn = await db.connect();
await conn.run(`SET VARIABLE root = ${quote(root.replace(/\/+$/, ''))}`);
await conn.run(`SET VARIABLE manifest = ${quote(manifest)}`);
const recipe = await readFile(new URL('results.sql', import.meta.url), 'utf8');
await conn.run(recipe);

const one = async (sql) => (await conn.runAndReadAll(sql)).getRowObjectsJson()[0];
const totals = await one('SELECT count(*)::INTEGER AS rows, count(DISTINCT index)::INTEGER AS distinct_indexes FROM results');
const byStatus = {};
for (const r of (await conn.runAndReadAll('SELECT status, count(*)::INTEGER AS n FROM results GROUP BY ALL ORDER BY status')).getRowObjectsJson()) {
  byStatus[r.status] = r.n;
}
let failedItems = 0;
const { path } = await one("SELECT getvariable('failures') AS path");
if (path !== null) {
  failedItems = (await one(`SELECT count(*)::INTEGER AS n FROM read_json(${quote(path)}, format = 'newline_delimited')`)).n;
}
console.log(JSON.stringify({ ...totals, by_status: byStatus, failed_items: failedItems }));
