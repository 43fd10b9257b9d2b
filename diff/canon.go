package diff

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Canonical returns the canonical form of a JSON value: compact, object
// keys sorted, strings re-escaped one way, and numbers written one way
// (1, 1.0 and 1e0 are all 1; -0 is 0; every digit kept, see normNumber),
// so that two values are the same JSON value exactly when their canonical
// forms are equal bytes. Whether two objects with duplicate keys are equal
// is left to encoding/json (the last wins); a value with a string holding
// half a surrogate pair (\ud800) is kept as written, compacted.
func Canonical(raw []byte) ([]byte, error) {
	if hasLoneSurrogate(raw) {
		// Decoded, such strings would be U+FFFD: keep them as written
		// (compacted), so that only the same spelling is the same value.
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return nil, fmt.Errorf("not JSON: %w", err)
		}
		return buf.Bytes(), nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("not JSON: more than one value")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	// encoding/json writes map keys sorted.
	if err := enc.Encode(normalize(v)); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// SameJSON reports whether a and b are the same JSON value. An absent
// value (empty) equals only another absent one; a value that is not JSON
// equals only the same bytes.
func SameJSON(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	ca, err := Canonical(a)
	if err != nil {
		return false
	}
	cb, err := Canonical(b)
	if err != nil {
		return false
	}
	return bytes.Equal(ca, cb)
}

func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
	case json.Number:
		return normNumber(x)
	}
	return v
}

// normNumber writes a number one way, exactly: its decimal digits without
// leading or trailing zeros and a power of ten (1, 1.0, 1e0 and 10e-1 are
// all 1; -0 is 0), as an integer when the power is 0 to 20, with a decimal
// point when that needs at most five leading zeros, and with an exponent
// otherwise. No number goes through float64, so numbers that a float64
// cannot tell apart stay apart. An exponent beyond ±2³¹ keeps the number
// as written.
func normNumber(n json.Number) json.Number {
	s := string(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	mant, expPart, hasExp := strings.Cut(strings.ToLower(s), "e")
	exp := int64(0)
	if hasExp {
		e, err := strconv.ParseInt(expPart, 10, 64)
		if err != nil || e > math.MaxInt32 || e < math.MinInt32 {
			return n
		}
		exp = e
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	exp -= int64(len(frac))
	if digits == "" {
		return "0"
	}
	trimmed := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(trimmed))
	digits = trimmed
	var out string
	switch nd := int64(len(digits)); {
	case exp >= 0 && exp <= 20:
		out = digits + strings.Repeat("0", int(exp))
	case exp < 0 && -exp < nd:
		out = digits[:nd+exp] + "." + digits[nd+exp:]
	case exp < 0 && -exp-nd <= 5:
		out = "0." + strings.Repeat("0", int(-exp-nd)) + digits
	default:
		out = digits[:1]
		if nd > 1 {
			out += "." + digits[1:]
		}
		out += "e" + strconv.FormatInt(exp+nd-1, 10)
	}
	if neg {
		out = "-" + out
	}
	return json.Number(out)
}

// hasLoneSurrogate reports whether a JSON text has a string with a \u
// escape of half a UTF-16 surrogate pair: encoding/json decodes every such
// half to U+FFFD, so values that differ there would decode the same.
func hasLoneSurrogate(raw []byte) bool {
	hex4 := func(i int) (rune, bool) {
		if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 32)
		return rune(v), err == nil
	}
	inString := false
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '"':
			inString = !inString
		case c == '\\' && inString:
			r, ok := hex4(i)
			switch {
			case !ok:
				i++ // a one-character escape
			case r >= 0xD800 && r < 0xDC00:
				if lo, ok := hex4(i + 6); !ok || lo < 0xDC00 || lo > 0xDFFF {
					return true
				}
				i += 11
			case r >= 0xDC00 && r <= 0xDFFF:
				return true
			default:
				i += 5
			}
		}
	}
	return false
}
