package inputs

import (
	"bytes"
	"io"
	"strconv"
)

// nextCSV returns the next record of a CSV input as a JSON object.
func (r *Reader) nextCSV() (Item, error) {
	for {
		start, err := r.readRecord()
		if err != nil {
			return Item{}, err
		}
		if !r.header {
			if err := r.setHeader(start); err != nil {
				return Item{}, err
			}
			continue
		}
		if len(r.ends) != len(r.keys) {
			return Item{}, r.errorf(start, "%d %s, header has %d", len(r.ends), plural(len(r.ends), "field", "fields"), len(r.keys))
		}
		out := append(r.out[:0], '{')
		prev := 0
		for i, end := range r.ends {
			if i > 0 {
				out = append(out, ',')
			}
			out = append(out, r.keys[i]...)
			out = appendJSONString(out, r.vals[prev:end])
			prev = end
		}
		r.out = append(out, '}')
		return Item{Line: start, JSON: r.out, End: -1}, nil
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// setHeader takes the current record as the header row.
func (r *Reader) setHeader(line int) error {
	seen := make(map[string]int, len(r.ends))
	r.keys = make([][]byte, len(r.ends))
	prev := 0
	for i, end := range r.ends {
		name := r.vals[prev:end]
		prev = end
		if len(name) == 0 {
			return r.errorf(line, "header column %d has no name (every column needs a unique name)", i+1)
		}
		if j, dup := seen[string(name)]; dup {
			return r.errorf(line, "duplicate header %s (columns %d and %d)", strconv.Quote(string(name)), j+1, i+1)
		}
		seen[string(name)] = i
		r.keys[i] = append(appendJSONString(nil, name), ':')
	}
	r.header = true
	return nil
}

// readRecord reads the next record into r.vals and r.ends and returns the
// line it starts on. Empty lines between records are skipped.
func (r *Reader) readRecord() (int, error) {
	r.vals, r.ends, r.inQuote = r.vals[:0], r.ends[:0], false
	start, size := 0, 0
	for {
		limit := r.max
		if start > 0 {
			limit = r.max - size - 1 // the newline joining the lines counts
		}
		line, err := r.readLine(limit)
		if start == 0 {
			r.recStart = r.lineStart
		}
		switch err {
		case nil:
		case io.EOF:
			if start == 0 {
				return 0, io.EOF
			}
			return 0, r.errorf(start, "quoted field is never closed (a closing \" is missing)")
		case errLineTooLong:
			if start == 0 {
				return 0, r.tooLongError(r.line, r.tooLong, r.exact)
			}
			return 0, r.tooLongError(start, int64(size)+1+r.tooLong, false)
		default:
			return 0, r.readError(err)
		}
		if start == 0 {
			if len(line) == 0 {
				continue
			}
			start = r.line
		} else {
			size++
		}
		size += len(line)
		if err := r.checkText(line); err != nil {
			return 0, err
		}
		done, err := r.parseLine(line)
		if err != nil {
			return 0, err
		}
		if done {
			return start, nil
		}
	}
}

// parseLine parses one line of a record into r.vals and r.ends. It reports
// whether the record is complete, that is the line does not end inside a
// quoted field. Like encoding/csv, a "\r\n" inside a quoted field becomes
// "\n".
func (r *Reader) parseLine(line []byte) (bool, error) {
	i := 0
	quoted := r.inQuote
	if quoted {
		r.vals = append(r.vals, '\n')
	}
	for {
		if !quoted {
			if i < len(line) && line[i] == '"' {
				quoted = true
				i++
				continue
			}
			end := len(line)
			if j := bytes.IndexByte(line[i:], ','); j >= 0 {
				end = i + j
			}
			field := line[i:end]
			if j := bytes.IndexByte(field, '"'); j >= 0 {
				return false, r.errorf(r.line, "invalid CSV at column %d: bare \" in a field that is not quoted (a quote inside a field must be doubled and the field quoted)", i+j+1)
			}
			r.vals = append(r.vals, field...)
			r.ends = append(r.ends, len(r.vals))
			if end == len(line) {
				r.inQuote = false
				return true, nil
			}
			i = end + 1
			continue
		}
		j := bytes.IndexByte(line[i:], '"')
		if j < 0 {
			r.vals = append(r.vals, line[i:]...)
			r.inQuote = true
			return false, nil
		}
		r.vals = append(r.vals, line[i:i+j]...)
		i += j + 1
		if i < len(line) && line[i] == '"' { // "" is a quote
			r.vals = append(r.vals, '"')
			i++
			continue
		}
		quoted = false
		r.ends = append(r.ends, len(r.vals))
		if i == len(line) {
			r.inQuote = false
			return true, nil
		}
		if line[i] != ',' {
			return false, r.errorf(r.line, "invalid CSV at column %d: unexpected %s after a closing quote (a quote inside a quoted field must be doubled)", i+1, strconv.QuoteRune(rune(line[i])))
		}
		i++
	}
}

// appendJSONString appends s, which is valid UTF-8, as a JSON string.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"
