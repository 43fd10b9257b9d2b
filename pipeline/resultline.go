package pipeline

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/batchpipe/batchpipe/manifests"
)

// appendResultLine appends l as the JSON encoding/json writes for it (HTML
// left unescaped), without the reflection and the re-compacting of Input
// and Output that cost most of a shard's encoding time: those are copied
// as they are, which is the same bytes because a shard's are valid
// compact JSON already (staged input items; outputs classify compacted or
// that were read from an earlier line).
func appendResultLine(b []byte, l manifests.ResultLine) []byte {
	b = append(b, `{"index":`...)
	b = strconv.AppendInt(b, l.Index, 10)
	b = append(b, `,"status":`...)
	b = appendJSONString(b, l.Status)
	if len(l.Input) > 0 {
		b = append(b, `,"input":`...)
		b = append(b, l.Input...)
	}
	b = append(b, `,"output":`...)
	b = appendRaw(b, l.Output)
	b = append(b, `,"error":`...)
	if l.Error == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"type":`...)
		b = appendJSONString(b, l.Error.Type)
		b = append(b, `,"message":`...)
		b = appendJSONString(b, l.Error.Message)
		b = append(b, '}')
	}
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(l.Attempts), 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendInt(b, l.DurationMS, 10)
	return append(b, '}')
}

func appendRaw(b []byte, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return append(b, "null"...)
	}
	return append(b, raw...)
}

// appendJSONString appends s quoted as encoding/json does without HTML
// escaping: printable ASCII as it is, anything else through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			var buf bytes.Buffer
			e := json.NewEncoder(&buf)
			e.SetEscapeHTML(false)
			e.Encode(s) // a string always encodes
			return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
