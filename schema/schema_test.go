package schema_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// node is a decoded schema (or instance): numbers stay json.Number.
type node = map[string]any

func load(t *testing.T, name string) node {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := decode(data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	m, ok := v.(node)
	if !ok {
		t.Fatalf("%s: not a JSON object", name)
	}
	return m
}

func decode(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data")
	}
	return v, nil
}

// resolve follows a local $ref ("#/$defs/name") from root.
func resolve(t *testing.T, root node, s node) node {
	t.Helper()
	for {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		name, ok := strings.CutPrefix(ref, "#/$defs/")
		if !ok {
			t.Fatalf("unsupported $ref %q", ref)
		}
		defs, _ := root["$defs"].(node)
		next, ok := defs[name].(node)
		if !ok {
			t.Fatalf("$ref %q: no such definition", ref)
		}
		s = next
	}
}

// jsonFields returns the JSON names of t's exported fields that have a json
// tag, with the fields.
func jsonFields(typ reflect.Type) map[string]reflect.StructField {
	fields := map[string]reflect.StructField{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag, ok := f.Tag.Lookup("json")
		if !f.IsExported() || !ok {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f
	}
	return fields
}

// types lists the JSON types a schema allows, looking through $ref, oneOf and
// anyOf; "$duration" stands for a $ref to #/$defs/duration.
func types(t *testing.T, root, s node) []string {
	t.Helper()
	if s["$ref"] == "#/$defs/duration" {
		return []string{"$duration"}
	}
	s = resolve(t, root, s)
	var out []string
	switch ty := s["type"].(type) {
	case string:
		out = append(out, ty)
	case []any:
		for _, x := range ty {
			out = append(out, x.(string))
		}
	}
	for _, k := range []string{"oneOf", "anyOf"} {
		branches, _ := s[k].([]any)
		for _, b := range branches {
			out = append(out, types(t, root, b.(node))...)
		}
	}
	return out
}

// wantType is the JSON type of a Go field's values in the contract.
func wantType(typ reflect.Type) (want string, nullable bool) {
	if typ.Kind() == reflect.Pointer {
		typ, nullable = typ.Elem(), true
	}
	switch {
	case typ == reflect.TypeFor[time.Duration]():
		return "$duration", nullable
	case typ == reflect.TypeFor[time.Time]():
		return "string", nullable
	}
	switch typ.Kind() {
	case reflect.String:
		return "string", nullable
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer", nullable
	case reflect.Float32, reflect.Float64:
		return "number", nullable
	case reflect.Bool:
		return "boolean", nullable
	case reflect.Struct, reflect.Map:
		return "object", nullable
	case reflect.Slice, reflect.Array:
		return "array", nullable
	}
	return typ.String(), nullable
}

type objectCheck struct {
	file    string
	pointer string // "" for the root, else a $defs name
	typ     reflect.Type
	strict  bool // the Go decoder refuses unknown keys: additionalProperties false
	// nested: property name → the $defs name its schema must lead to
	nested map[string]string
}

// TestSchemaMatchesGoTypes checks that each object schema lists exactly the
// JSON names of its Go type's fields, with matching JSON types, that the
// input's objects refuse unknown keys like the Go decoder, and that nested
// objects lead to the definition of their Go type.
func TestSchemaMatchesGoTypes(t *testing.T) {
	checks := []objectCheck{
		{file: "batch-input.json", typ: reflect.TypeFor[pipeline.BatchInput](), strict: true,
			nested: map[string]string{"options": "options", "cursor": "cursor"}},
		{file: "batch-input.json", pointer: "options", typ: reflect.TypeFor[pipeline.Options](), strict: true,
			nested: map[string]string{"max_failures": "failure_limit", "canary_max_failures": "failure_limit"}},
		{file: "batch-input.json", pointer: "failure_limit", typ: reflect.TypeFor[pipeline.FailureLimit](), strict: true},
		{file: "batch-input.json", pointer: "cursor", typ: reflect.TypeFor[pipeline.Cursor](), strict: true},
		{file: "progress.json", typ: reflect.TypeFor[pipeline.Progress]()},
		{file: "batch-result.json", typ: reflect.TypeFor[pipeline.BatchResult]()},
	}
	roots := map[string]node{}
	for _, c := range checks {
		root := roots[c.file]
		if root == nil {
			root = load(t, c.file)
			roots[c.file] = root
		}
		where := c.file
		s := root
		if c.pointer != "" {
			where += "#/$defs/" + c.pointer
			s = resolve(t, root, node{"$ref": "#/$defs/" + c.pointer})
		}
		props, _ := s["properties"].(node)
		fields := jsonFields(c.typ)
		got, want := sortedKeys(props), sortedKeys(fields)
		if !slices.Equal(got, want) {
			t.Errorf("%s: properties %v, want the JSON names of %v: %v", where, got, c.typ, want)
		}
		if ap, ok := s["additionalProperties"]; c.strict && ap != false {
			t.Errorf("%s: additionalProperties = %v, want false: the Go decoder refuses unknown keys", where, ap)
		} else if !c.strict && ok {
			t.Errorf("%s: additionalProperties = %v; readers of outputs ignore keys they do not know", where, ap)
		}
		for name, f := range fields {
			p, ok := props[name].(node)
			if !ok {
				continue
			}
			wt, nullable := wantType(f.Type)
			allowed := types(t, root, p)
			if !slices.Contains(allowed, wt) {
				t.Errorf("%s: %s allows %v, want %s (Go %v)", where, name, allowed, wt, f.Type)
			}
			for _, a := range allowed {
				if a != wt && !(a == "null" && (nullable || wt == "$duration")) {
					t.Errorf("%s: %s allows %s, which Go %v does not take", where, name, a, f.Type)
				}
			}
			if def, ok := c.nested[name]; ok {
				if !leadsTo(p, "#/$defs/"+def) {
					t.Errorf("%s: %s does not lead to #/$defs/%s", where, name, def)
				}
			}
		}
	}
	// The result's counts are a manifests.Counts.
	counts := roots["batch-result.json"]["properties"].(node)["counts"].(node)["properties"].(node)
	if got, want := sortedKeys(counts), sortedKeys(jsonFields(reflect.TypeFor[manifests.Counts]())); !slices.Equal(got, want) {
		t.Errorf("batch-result.json: counts has %v, want %v", got, want)
	}
}

func leadsTo(s node, ref string) bool {
	if s["$ref"] == ref {
		return true
	}
	for _, k := range []string{"oneOf", "anyOf"} {
		branches, _ := s[k].([]any)
		for _, b := range branches {
			if leadsTo(b.(node), ref) {
				return true
			}
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestSchemaDefaults checks the documented defaults against what the
// workflow applies: the options' defaults are Options.WithDefaults of
// nothing but a processor, every other default is the Go zero value.
func TestSchemaDefaults(t *testing.T) {
	root := load(t, "batch-input.json")
	opts := resolve(t, root, node{"$ref": "#/$defs/options"})
	doc := map[string]any{}
	for name, p := range opts["properties"].(node) {
		p := p.(node)
		def, ok := p["default"]
		if !ok {
			def, ok = resolve(t, root, p)["default"]
		}
		switch {
		case name == "processor":
			if ok {
				t.Errorf("options.processor has a default %v; it must be named", def)
			}
		case !ok:
			t.Errorf("options.%s has no default", name)
		default:
			doc[name] = def
		}
	}
	doc["processor"] = "p"
	var got pipeline.Options
	data, _ := json.Marshal(doc)
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("the schema's option defaults %s: %v", data, err)
	}
	if want := (pipeline.Options{Processor: "p"}).WithDefaults(); !reflect.DeepEqual(got, want) {
		t.Errorf("the schema's option defaults read as\n%+v, want what the workflow applies,\n%+v", got, want)
	}
	if m := opts["properties"].(node)["item_attempts"].(node)["maximum"]; fmt.Sprint(m) != fmt.Sprint(pipeline.MaxItemAttempts) {
		t.Errorf("options.item_attempts maximum %v, want pipeline.MaxItemAttempts %d", m, pipeline.MaxItemAttempts)
	}

	// Elsewhere a default is the Go zero value.
	zeroOf := func(where string, typ reflect.Type, s node) {
		for name, f := range jsonFields(typ) {
			p, ok := s["properties"].(node)[name].(node)
			if !ok {
				continue
			}
			def, ok := p["default"]
			if !ok {
				continue
			}
			v := reflect.New(f.Type)
			raw, _ := json.Marshal(def)
			if err := json.Unmarshal(raw, v.Interface()); err != nil {
				t.Errorf("%s.%s: default %s: %v", where, name, raw, err)
			} else if !v.Elem().IsZero() {
				t.Errorf("%s.%s: default %s is not the Go zero value, which the workflow keeps as it is", where, name, raw)
			}
		}
	}
	zeroOf("input", reflect.TypeFor[pipeline.BatchInput](), root)
	zeroOf("cursor", reflect.TypeFor[pipeline.Cursor](), resolve(t, root, node{"$ref": "#/$defs/cursor"}))
	if def := resolve(t, root, node{"$ref": "#/$defs/failure_limit"})["default"]; !reflect.DeepEqual(def, node{}) {
		t.Errorf("failure_limit default %v, want {} (no limit)", def)
	}
}

// TestSchemaAgreesWithValidate runs inputs through both the schema and the
// Go decoder with BatchInput.Validate, as BatchWorkflow does, and wants the
// same verdict.
func TestSchemaAgreesWithValidate(t *testing.T) {
	root := load(t, "batch-input.json")
	base := `"batch_id":"b1","store":"s3://bkt/pre","input_url":"s3://bkt/in.jsonl"`
	withOpts := func(opts string) string {
		return `{` + base + `,"options":{"processor":"example"` + opts + `}}`
	}
	staged := `"batch_id":"b1","store":"file:///tmp/s","source":"in.jsonl","items":2500,"shards":3`
	cases := []struct {
		name  string
		doc   string
		valid bool
		// goOnly: the schema cannot say it, Validate refuses it.
		goOnly bool
	}{
		{"minimal", withOpts(``), true, false},
		{"every option", withOpts(`,"shard_size":100,"concurrency":4,"shards_per_run":10,"max_failures":{"count":5},` +
			`"item_timeout":"1m30s","item_attempts":100,"item_backoff":250000000,"item_parallelism":2`), true, false},
		{"zero options are defaults", withOpts(`,"shard_size":0,"concurrency":0,"shards_per_run":0,"item_timeout":0,` +
			`"item_attempts":0,"item_backoff":"0","item_parallelism":0,"max_failures":{}`), true, false},
		{"null durations", withOpts(`,"item_timeout":null,"item_backoff":null`), true, false},
		{"percent", withOpts(`,"max_failures":{"percent":2.5}`), true, false},
		{"count 0", withOpts(`,"max_failures":{"count":0}`), true, false},
		{"count with null percent", withOpts(`,"max_failures":{"count":1,"percent":null}`), true, false},
		{"csv, item size", `{` + base + `,"input_format":"csv","max_item_bytes":4096,"options":{"processor":"x"}}`, true, false},
		{"duration units", withOpts(`,"item_timeout":"1h2m3.5s","item_backoff":"10ms"`), true, false},
		{"micro sign", withOpts(`,"item_backoff":"500µs"`), true, false},

		{"misspelt top key", `{` + base + `,"optoins":{},"options":{"processor":"x"}}`, false, false},
		{"misspelt option", withOpts(`,"shard_sizee":5`), false, false},
		{"misspelt max_failures key", withOpts(`,"max_failures":{"cuont":5}`), false, false},
		{"misspelt cursor key", `{` + base + `,"cursor":{"run":1,"nxt_shard":2},"options":{"processor":"x"}}`, false, false},
		{"no batch_id", `{"store":"s3://b","input_url":"s3://b/k","options":{"processor":"x"}}`, false, false},
		{"batch_id with a slash", `{"batch_id":"a/b","store":"s3://b","input_url":"s3://b/k","options":{"processor":"x"}}`, false, false},
		{"batch_id starting with -", `{"batch_id":"-a","store":"s3://b","input_url":"s3://b/k","options":{"processor":"x"}}`, false, false},
		{"batch_id of 200", `{"batch_id":"` + strings.Repeat("a", 200) + `","store":"s3://b","input_url":"s3://b/k","options":{"processor":"x"}}`, true, false},
		{"batch_id of 201", `{"batch_id":"` + strings.Repeat("a", 201) + `","store":"s3://b","input_url":"s3://b/k","options":{"processor":"x"}}`, false, false},
		{"no store", `{"batch_id":"b","input_url":"s3://b/k","options":{"processor":"x"}}`, false, false},
		{"empty store", `{"batch_id":"b","store":"","input_url":"s3://b/k","options":{"processor":"x"}}`, false, false},
		{"no options", `{` + base + `}`, false, false},
		{"no processor", `{` + base + `,"options":{"concurrency":2}}`, false, false},
		{"empty processor", `{` + base + `,"options":{"processor":""}}`, false, false},
		{"no input", `{"batch_id":"b","store":"s3://b","options":{"processor":"x"}}`, false, false},
		{"empty input_url", `{"batch_id":"b","store":"s3://b","input_url":"","options":{"processor":"x"}}`, false, false},
		{"negative concurrency", withOpts(`,"concurrency":-1`), false, false},
		{"negative shard_size", withOpts(`,"shard_size":-1`), false, false},
		{"negative shards_per_run", withOpts(`,"shards_per_run":-1`), false, false},
		{"negative item_parallelism", withOpts(`,"item_parallelism":-2`), false, false},
		{"101 attempts", withOpts(`,"item_attempts":101`), false, false},
		{"negative timeout", withOpts(`,"item_timeout":"-1s"`), false, false},
		{"negative backoff nanoseconds", withOpts(`,"item_backoff":-5`), false, false},
		{"duration without unit", withOpts(`,"item_timeout":"90"`), false, false},
		{"duration in words", withOpts(`,"item_timeout":"1 minute"`), false, false},
		{"fractional nanoseconds", withOpts(`,"item_timeout":1.5`), false, false},
		{"integer as string", withOpts(`,"concurrency":"4"`), false, false},
		{"count and percent", withOpts(`,"max_failures":{"count":1,"percent":1}`), false, false},
		{"negative count", withOpts(`,"max_failures":{"count":-1}`), false, false},
		{"percent over 100", withOpts(`,"max_failures":{"percent":100.5}`), false, false},
		{"max_failures as a string", withOpts(`,"max_failures":"5%"`), false, false},
		{"xml", `{` + base + `,"input_format":"xml","options":{"processor":"x"}}`, false, false},
		{"negative item size", `{` + base + `,"max_item_bytes":-1,"options":{"processor":"x"}}`, false, false},
		{"negative redrive", `{` + base + `,"redrive":-1,"options":{"processor":"x"}}`, false, false},
		{"upper-case input_dir", `{` + base + `,"input_dir":"ABC","options":{"processor":"x"}}`, false, false},
		{"negative items", `{` + base + `,"items":-1,"options":{"processor":"x"}}`, false, false},

		{"staged by the library", `{` + staged + `,"input_dir":"a1-b2","input_sha256":"ab12","options":{"processor":"x","shard_size":1000}}`, true, false},
		{"staged without shard_size", `{` + staged + `,"options":{"processor":"x"}}`, false, false},
		{"staged with a wrong shard count", `{` + staged + `,"options":{"processor":"x","shard_size":500}}`, false, true},
		{"continued run", `{` + staged + `,"options":{"processor":"x","shard_size":1000},"cursor":{"next_shard":2,"shards_done":2,` +
			`"succeeded":2000,"failed":0,"run":1,"started_at":"2026-11-25T02:00:00Z"}}`, true, false},
		{"scheduled redrive", `{` + base + `,"schedule":"nightly","redrive":2,"options":{"processor":"x"}}`, true, false},
	}
	// What the Go library itself sends must pass too.
	five := int64(5)
	lib := []pipeline.BatchInput{
		{BatchID: "lib1", Store: "s3://b/p", Source: "in.jsonl", Items: 2500, Shards: 3, InputDir: "x1", InputSHA256: "ab",
			Options: func() pipeline.Options {
				o := pipeline.DefaultOptions()
				o.MaxFailures = pipeline.MaxFailedItems(five)
				return o
			}()},
		{BatchID: "lib2", Store: "s3://b/p", InputURL: "s3://b/in.jsonl", Schedule: "s", Options: pipeline.Options{Processor: "example"},
			Cursor: &pipeline.Cursor{Run: 1, StartedAt: time.Date(2026, 11, 25, 2, 0, 0, 123, time.UTC)}},
		{BatchID: "lib3", Store: "file:///x", InputURL: "file:///x/in.csv", InputFormat: "csv", MaxItemBytes: 10,
			Options: func() pipeline.Options {
				o := pipeline.DefaultOptions()
				o.MaxFailures = pipeline.MaxFailedPercent(0.5)
				return o
			}()},
	}
	for _, in := range lib {
		data, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct {
			name          string
			doc           string
			valid, goOnly bool
		}{"Go library input " + in.BatchID, string(data), true, false})
	}

	for _, c := range cases {
		inst, err := decode([]byte(c.doc))
		if err != nil {
			t.Fatalf("%s: bad test JSON: %v", c.name, err)
		}
		schemaErr := validate(t, root, root, inst, "")
		var in pipeline.BatchInput
		goErr := json.Unmarshal([]byte(c.doc), &in)
		if goErr == nil {
			goErr = in.Validate()
		}
		wantSchema := c.valid || c.goOnly
		if (schemaErr == nil) != wantSchema {
			t.Errorf("%s: schema says %v, want valid=%v\n  %s", c.name, errOrValid(schemaErr), wantSchema, c.doc)
		}
		if (goErr == nil) != c.valid {
			t.Errorf("%s: Go says %v, want valid=%v\n  %s", c.name, errOrValid(goErr), c.valid, c.doc)
		}
	}
}

func errOrValid(err error) string {
	if err == nil {
		return "valid"
	}
	return err.Error()
}

// annotations are keywords that do not constrain an instance here.
var annotations = map[string]bool{"$schema": true, "$id": true, "$comment": true, "$defs": true, "title": true,
	"description": true, "default": true, "examples": true, "format": true}

// validate checks inst against s: the part of JSON Schema 2020-12 the
// contract's schemas use. A keyword it does not know fails the test, so it
// cannot pass an instance by ignoring what constrains it.
func validate(t *testing.T, root, s node, inst any, at string) error {
	t.Helper()
	if at == "" {
		at = "/"
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", at, fmt.Sprintf(format, args...))
	}
	for k := range s {
		switch k {
		case "$ref", "type", "enum", "properties", "required", "additionalProperties", "minimum", "maximum",
			"minLength", "maxLength", "pattern", "oneOf", "anyOf", "not", "if", "then":
		default:
			if !annotations[k] {
				t.Fatalf("schema keyword %q at %s is not supported by this test's validator", k, at)
			}
		}
	}
	if ref, ok := s["$ref"]; ok {
		if err := validate(t, root, resolve(t, root, node{"$ref": ref}), inst, at); err != nil {
			return err
		}
	}
	if ty, ok := s["type"]; ok {
		var allowed []string
		switch ty := ty.(type) {
		case string:
			allowed = []string{ty}
		case []any:
			for _, x := range ty {
				allowed = append(allowed, x.(string))
			}
		}
		if !slices.ContainsFunc(allowed, func(ty string) bool { return isType(inst, ty) }) {
			return fail("%s is not of type %v", short(inst), allowed)
		}
	}
	if enum, ok := s["enum"].([]any); ok && !slices.ContainsFunc(enum, func(e any) bool { return reflect.DeepEqual(e, inst) }) {
		return fail("%s is not one of %v", short(inst), enum)
	}
	switch v := inst.(type) {
	case node:
		props, _ := s["properties"].(node)
		for _, r := range asList(s["required"]) {
			if _, ok := v[r.(string)]; !ok {
				return fail("%q is required", r)
			}
		}
		for _, k := range sortedKeys(v) {
			p, ok := props[k].(node)
			if !ok {
				if s["additionalProperties"] == false {
					return fail("unknown key %q", k)
				}
				continue
			}
			if err := validate(t, root, p, v[k], strings.TrimSuffix(at, "/")+"/"+k); err != nil {
				return err
			}
		}
	case json.Number:
		f, _ := v.Float64()
		if m, ok := s["minimum"].(json.Number); ok {
			if lim, _ := m.Float64(); f < lim {
				return fail("%s is less than %s", v, m)
			}
		}
		if m, ok := s["maximum"].(json.Number); ok {
			if lim, _ := m.Float64(); f > lim {
				return fail("%s is more than %s", v, m)
			}
		}
	case string:
		if m, ok := s["minLength"].(json.Number); ok {
			if lim, _ := m.Int64(); int64(utf8.RuneCountInString(v)) < lim {
				return fail("%q is shorter than %s", v, m)
			}
		}
		if m, ok := s["maxLength"].(json.Number); ok {
			if lim, _ := m.Int64(); int64(utf8.RuneCountInString(v)) > lim {
				return fail("%q is longer than %s", short(v), m)
			}
		}
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(v) {
			return fail("%q does not match %s", short(v), p)
		}
	}
	if branches, ok := s["oneOf"].([]any); ok {
		n := 0
		for _, b := range branches {
			if validate(t, root, b.(node), inst, at) == nil {
				n++
			}
		}
		if n != 1 {
			return fail("%s matches %d of oneOf's %d schemas, want 1", short(inst), n, len(branches))
		}
	}
	if branches, ok := s["anyOf"].([]any); ok {
		if !slices.ContainsFunc(branches, func(b any) bool { return validate(t, root, b.(node), inst, at) == nil }) {
			return fail("%s matches none of anyOf's schemas", short(inst))
		}
	}
	if not, ok := s["not"].(node); ok && validate(t, root, not, inst, at) == nil {
		return fail("%s matches what \"not\" refuses", short(inst))
	}
	if cond, ok := s["if"].(node); ok && validate(t, root, cond, inst, at) == nil {
		if then, ok := s["then"].(node); ok {
			if err := validate(t, root, then, inst, at); err != nil {
				return err
			}
		}
	}
	return nil
}

func asList(v any) []any { l, _ := v.([]any); return l }

func isType(inst any, ty string) bool {
	switch v := inst.(type) {
	case nil:
		return ty == "null"
	case bool:
		return ty == "boolean"
	case string:
		return ty == "string"
	case []any:
		return ty == "array"
	case node:
		return ty == "object"
	case json.Number:
		if ty == "number" {
			return true
		}
		f, err := v.Float64()
		return ty == "integer" && err == nil && f == math.Trunc(f) && !math.IsInf(f, 0)
	}
	return false
}

func short(v any) string {
	data, _ := json.Marshal(v)
	if len(data) > 60 {
		return string(data[:57]) + "..."
	}
	return string(data)
}
