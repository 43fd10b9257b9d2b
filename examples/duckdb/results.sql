-- A batch's results in DuckDB, read from the keys its manifest lists. (A glob
-- over results/*.jsonl.zst reads each item once only for a batch that ran to
-- its end: a redrive run with --keep-superseded, or a stopped run's
-- leftovers until gc collects them, sit beside the live objects, and a glob
-- would read both.) Set two variables first:
--
--   root      what the manifest's keys are relative to: a file:// store's
--             directory ('/data/batchpipe'), or the bucket ('s3://bucket')
--             of an s3://bucket/prefix store (the keys include the prefix;
--             INSTALL httpfs; LOAD httpfs; and a CREATE SECRET for S3)
--   manifest  the batch's manifest: root || '/[prefix/]batches/ID/manifest.json'
--
-- e.g.  SET VARIABLE root = '/data/batchpipe';
--       SET VARIABLE manifest = '/data/batchpipe/batches/nightly-20261125T020000Z/manifest.json';
--
-- A manifest with no results (a batch canceled before its first shard) has
-- an empty list, which read_json refuses.

-- Every result object's path, in input order.
SET VARIABLE results = (
  SELECT list(getvariable('root') || '/' || r.key ORDER BY r.first_index)
  FROM (SELECT unnest(results) AS r FROM read_json(getvariable('manifest')))
);

-- One row per item: {"index","status","output","error","attempts","duration_ms"};
-- output and error are on every line, one of them null (add input: 'JSON'
-- for a batch run with --results-include-input).
CREATE OR REPLACE VIEW results AS
SELECT * FROM read_json(getvariable('results'),
  format = 'newline_delimited', compression = 'zstd',
  columns = {index: 'BIGINT', status: 'VARCHAR', output: 'JSON', error: 'JSON',
             attempts: 'INTEGER', duration_ms: 'BIGINT'});

-- The failed items with their inputs (failed.jsonl.zst), when any failed.
SET VARIABLE failures = (
  SELECT getvariable('root') || '/' || failures.key FROM read_json(getvariable('manifest'))
);
