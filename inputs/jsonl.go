package inputs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// nextJSONL returns the next object of a JSON Lines input.
func (r *Reader) nextJSONL() (Item, error) {
	for {
		line, err := r.readLine(r.max)
		switch err {
		case nil:
		case io.EOF:
			return Item{}, io.EOF
		case errLineTooLong:
			return Item{}, r.tooLongError(r.line, r.tooLong, r.exact)
		default:
			return Item{}, r.readError(err)
		}
		i := 0
		for i < len(line) && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r') {
			i++
		}
		if i == len(line) {
			continue // blank line
		}
		if err := r.checkText(line); err != nil {
			return Item{}, err
		}
		if line[i] != '{' {
			return Item{}, r.notObject(line, i)
		}
		if len(line) > MaxDepth {
			if col := tooDeep(line); col > 0 {
				return Item{}, r.errorf(r.line, "invalid JSON at column %d: nested too deeply (more than %d levels; result lines must stay readable)", col, MaxDepth)
			}
		}
		r.jbuf.Reset()
		if err := json.Compact(&r.jbuf, line); err != nil {
			return Item{}, r.jsonError(line, err)
		}
		return Item{Line: r.line, JSON: r.jbuf.Bytes(), End: r.itemEnd()}, nil
	}
}

// notObject describes a line whose first non-space byte, at i, is not '{'.
func (r *Reader) notObject(line []byte, i int) error {
	var what string
	switch c := line[i]; {
	case c == '[':
		what = "an array"
	case c == '"':
		what = "a string"
	case c == '-' || '0' <= c && c <= '9':
		what = "a number"
	case c == 't' || c == 'f':
		what = "a boolean"
	case c == 'n':
		what = "null"
	}
	if what != "" && (what == "an array" || what == "a string" || json.Valid(line)) {
		msg := "expected a JSON object, got " + what
		if what == "an array" && r.line == 1 {
			msg += " (the input must be JSON Lines, one object per line; a file holding one JSON array converts with: jq -c '.[]')"
		}
		return r.errorf(r.line, "%s", msg)
	}
	err := json.Compact(&r.jbuf, line)
	if err == nil { // cannot happen: the line does not start with a value
		err = errors.New("not a JSON value")
	}
	return r.jsonError(line, err)
}

// jsonError describes a JSON syntax error in line.
func (r *Reader) jsonError(line []byte, err error) error {
	// json.Compact does not say where the error is; json.Unmarshal does.
	var raw json.RawMessage
	if err2 := json.Unmarshal(line, &raw); err2 != nil {
		err = err2
	}
	var msg string
	var se *json.SyntaxError
	if errors.As(err, &se) {
		text := se.Error()
		switch {
		case text == "unexpected end of JSON input":
			msg = "invalid JSON: unexpected end of input (each item must be one complete JSON object on one line)"
		case strings.HasSuffix(text, "exceeded max depth"):
			msg = fmt.Sprintf("invalid JSON at column %d: nested too deeply (over 10000 levels)", se.Offset)
		case strings.HasSuffix(text, "after top-level value"):
			msg = fmt.Sprintf("unexpected data after the JSON object at column %d (one object per line)", se.Offset)
		default:
			msg = fmt.Sprintf("invalid JSON at column %d: %s", se.Offset, text)
		}
	} else {
		msg = "invalid JSON: " + err.Error()
	}
	if r.line == 1 && r.inferred && !bytes.Contains(line, []byte("{")) && bytes.Contains(line, []byte(",")) {
		msg += " (if this is a CSV file, name it .csv or set the format to csv)"
	}
	return r.errorf(r.line, "%s", msg)
}

// MaxDepth is the deepest nesting of objects and arrays an item may have.
// encoding/json reads at most 10,000 levels, and a result or failure line
// wraps the item one level deeper, so items stop at 9,999.
const MaxDepth = 9999

// tooDeep returns the 1-based column where line's nesting goes past
// MaxDepth, or 0 when it does not.
func tooDeep(line []byte) int {
	depth, inString, escaped := 0, false, false
	for i, c := range line {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth++; depth > MaxDepth {
				return i + 1
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return 0
}
