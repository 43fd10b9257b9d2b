#!/bin/sh
# A batchpipe exec processor in shell: counts the words in every string of
# the item. Needs jq (https://jqlang.org); see echo.sh for plain sh.
#
#   --processor "exec:sh examples/processors/wordcount.sh"
#
# One jq process serves item after item: -c writes each answer on one line,
# --unbuffered flushes it at once. Items that are not objects fail
# permanently; everything else gets {"output": {"words": N, "strings": M}}.
exec jq -c --unbuffered '
  if type != "object" then
    {error: {message: "want a JSON object, got \(type)", permanent: true}}
  else
    [.. | strings] as $s
    | {output: {words: ([$s[] | splits("[[:space:]]+") | select(. != "")] | length),
                strings: ($s | length)}}
  end'
