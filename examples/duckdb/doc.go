// Package duckdb holds no Go code of its own: the example is results.sql, a
// DuckDB recipe that reads a batch's results from the keys its manifest
// lists, and results.mjs, which runs it with @duckdb/node-api. Its test runs
// a real batch with the embedded default and checks what the recipe reads.
package duckdb
