#!/bin/sh
# The smallest batchpipe exec processor: plain POSIX sh, no other tools.
# Each item comes back wrapped as the output, with its length in bytes.
#
#   --processor "exec:sh examples/processors/echo.sh"
#
# An input line is already JSON, so it can be pasted into the answer as is.
# printf writes straight to the pipe: nothing to flush.
while IFS= read -r line; do
  case $line in
    '{'*) printf '{"output":{"input":%s,"bytes":%d}}\n' "$line" "${#line}" ;;
    *)    printf '{"error":{"message":"want a JSON object","permanent":true}}\n' ;;
  esac
done
