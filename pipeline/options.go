package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
)

// The BatchWorkflow input is a public JSON contract (schema/batch-input.json):
// unknown keys are refused, durations are Go duration strings ("90s", "1m")
// or integer nanoseconds, and zero values get the defaults of DefaultOptions,
// all at workflow entry through BatchInput.Validate, the same function the
// library and the CLI call before anything is written.

// ErrTypeInvalidInput is the error type of a BatchWorkflow started with an
// input that Validate refuses; the workflow fails at once, naming the field.
const ErrTypeInvalidInput = "InvalidBatchInput"

// MaxItemAttempts bounds Options.ItemAttempts.
const MaxItemAttempts = 100

// MaxItemsPerCall bounds Options.ItemsPerCall.
const MaxItemsPerCall = 10000

// Bounds of Options.Priority (Temporal's priority keys: 1 is the highest,
// 3 the default), Options.FairnessKey (Temporal's limit) and
// Options.FairnessWeight (the range Temporal clamps weights to).
const (
	MaxPriority         = 5
	MaxFairnessKeyBytes = 64
	MinFairnessWeight   = 0.001
	MaxFairnessWeight   = 1000
)

// WithDefaults returns o with every zero knob set from DefaultOptions, except
// ShardSize (0 means "size it from the input" for a batch that stages its
// own input) and Processor (which must be named).
func (o Options) WithDefaults() Options {
	d := DefaultOptions()
	if o.Concurrency == 0 {
		o.Concurrency = d.Concurrency
	}
	if o.ShardsPerRun == 0 {
		o.ShardsPerRun = d.ShardsPerRun
	}
	if o.ItemTimeout == 0 {
		o.ItemTimeout = d.ItemTimeout
	}
	if o.ItemAttempts == 0 {
		o.ItemAttempts = d.ItemAttempts
	}
	if o.ItemBackoff == 0 {
		o.ItemBackoff = d.ItemBackoff
	}
	if o.ItemParallelism == 0 {
		o.ItemParallelism = d.ItemParallelism
	}
	return o
}

// Validate checks o after WithDefaults, naming the first bad field as it is
// spelled in the JSON contract.
func (o Options) Validate() error {
	switch {
	case o.invalid != "":
		return fmt.Errorf("options: %s", o.invalid)
	case o.Processor == "":
		return errors.New("options.processor is required")
	case o.ShardSize < 0:
		return fmt.Errorf("options.shard_size must not be negative (0 sizes it from the input), got %d", o.ShardSize)
	case o.Concurrency < 1:
		return fmt.Errorf("options.concurrency must be at least 1, got %d", o.Concurrency)
	case o.ShardsPerRun < 1:
		return fmt.Errorf("options.shards_per_run must be at least 1, got %d", o.ShardsPerRun)
	case o.ItemTimeout < 0:
		return fmt.Errorf("options.item_timeout must not be negative (0 means the default), got %v", o.ItemTimeout)
	case o.ItemAttempts < 1 || o.ItemAttempts > MaxItemAttempts:
		return fmt.Errorf("options.item_attempts must be 1 to %d, got %d", MaxItemAttempts, o.ItemAttempts)
	case o.ItemBackoff < 0:
		return fmt.Errorf("options.item_backoff must not be negative, got %v", o.ItemBackoff)
	case o.ItemParallelism < 1:
		return fmt.Errorf("options.item_parallelism must be at least 1, got %d", o.ItemParallelism)
	case o.ItemsPerCall < 0 || o.ItemsPerCall > MaxItemsPerCall:
		return fmt.Errorf("options.items_per_call must be 1 to %d (0 means 1), got %d", MaxItemsPerCall, o.ItemsPerCall)
	case math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0) || o.Rate < 0 || (o.Rate > 0 && o.Rate < 1):
		return fmt.Errorf("options.rate must be at least 1 item per second (0 means no limit), got %v", o.Rate)
	case o.Priority < 0 || o.Priority > MaxPriority:
		return fmt.Errorf("options.priority must be 1 (highest) to %d (0 means the default, 3), got %d", MaxPriority, o.Priority)
	case len(o.FairnessKey) > MaxFairnessKeyBytes:
		return fmt.Errorf("options.fairness_key must be at most %d bytes, got %d", MaxFairnessKeyBytes, len(o.FairnessKey))
	case math.IsNaN(o.FairnessWeight) || o.FairnessWeight < 0 || (o.FairnessWeight > 0 && o.FairnessWeight < MinFairnessWeight) || o.FairnessWeight > MaxFairnessWeight:
		return fmt.Errorf("options.fairness_weight must be %g to %g (0 means 1), got %v", MinFairnessWeight, float64(MaxFairnessWeight), o.FairnessWeight)
	case !o.Canary && o.CanaryMaxFailures.Set():
		return errors.New("options.canary_max_failures needs options.canary")
	}
	if err := o.CanaryMaxFailures.Validate(); err != nil {
		return fmt.Errorf("options.canary_max_failures%s", strings.TrimPrefix(err.Error(), "options.max_failures"))
	}
	return o.MaxFailures.Validate()
}

// Validate checks a batch's start input and fills in the defaults of its
// zero options (WithDefaults). It is what BatchWorkflow runs first; the
// library runs it before staging, so a bad request writes nothing.
func (in *BatchInput) Validate() error {
	if in.invalid != "" {
		return errors.New(in.invalid)
	}
	if err := manifests.ValidateBatchID(in.BatchID); err != nil {
		return fmt.Errorf("batch_id: %w", err)
	}
	if in.Store == "" {
		return errors.New("store is required (a store URL such as s3://bucket/prefix)")
	}
	if scheme, _, _ := strings.Cut(in.Store, "://"); !slices.Contains(blobstore.Schemes(), scheme) {
		return fmt.Errorf("store %q: unknown scheme %q (known: %s)", blobstore.Redact(in.Store), scheme, strings.Join(blobstore.Schemes(), ", "))
	}
	if in.InputURL != "" {
		if scheme, _, _ := strings.Cut(in.InputURL, "://"); !slices.Contains(blobstore.Schemes(), scheme) {
			return fmt.Errorf("input_url %q: unknown scheme %q (known: %s)", blobstore.Redact(in.InputURL), scheme, strings.Join(blobstore.Schemes(), ", "))
		}
		if _, _, err := blobstore.SplitObjectURL(in.InputURL); err != nil {
			return fmt.Errorf("input_url: %v", err)
		}
	}
	in.Options = in.Options.WithDefaults()
	if err := in.Options.Validate(); err != nil {
		return err
	}
	switch {
	case in.Items < 0 || in.Shards < 0:
		return fmt.Errorf("items and shards must not be negative (got %d and %d)", in.Items, in.Shards)
	case in.InputURL == "" && in.Shards == 0 && in.Cursor == nil:
		return errors.New("input_url is required (or items, shards and options.shard_size of an input staged by the library)")
	case in.Shards > 0 && in.Options.ShardSize == 0:
		return errors.New("options.shard_size is required with a staged input (shards > 0)")
	case in.Shards > 0 && int64(in.Shards) != (in.Items+int64(in.Options.ShardSize)-1)/int64(in.Options.ShardSize):
		return fmt.Errorf("shards (%d) does not match items (%d) at options.shard_size %d", in.Shards, in.Items, in.Options.ShardSize)
	case in.InputFormat != "" && in.InputFormat != "jsonl" && in.InputFormat != "csv":
		return fmt.Errorf("input_format %q: want jsonl or csv", in.InputFormat)
	case in.MaxItemBytes < 0:
		return fmt.Errorf("max_item_bytes must not be negative, got %d", in.MaxItemBytes)
	case in.Redrive < 0:
		return fmt.Errorf("redrive must not be negative, got %d", in.Redrive)
	}
	if in.InputDir != "" {
		if err := validateInputDir(in.InputDir); err != nil {
			return err
		}
	}
	return nil
}

func validateInputDir(dir string) error {
	for _, c := range dir {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("input_dir %q: want lower-case letters, digits and '-'", dir)
		}
	}
	return nil
}

// NoFailureLimit never stops a batch.
var NoFailureLimit = FailureLimit{}

// MaxFailedItems stops a batch once more than n items failed; 0 stops it at
// the first failure.
func MaxFailedItems(n int64) FailureLimit { return FailureLimit{Count: &n} }

// MaxFailedPercent stops a batch once more than p percent of its items
// failed; 0 stops it at the first failure.
func MaxFailedPercent(p float64) FailureLimit { return FailureLimit{Percent: &p} }

// ParseFailureLimit reads "N" (items) or "N%" (of the batch's items), as the
// CLI's --max-failures takes it; "" is no limit.
func ParseFailureLimit(s string) (FailureLimit, error) {
	if s == "" {
		return NoFailureLimit, nil
	}
	bad := fmt.Errorf("%q: want a count like 10 or a percentage like 5%% (0 or 0%% stops at the first failure)", s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || math.IsNaN(v) || v < 0 || v > 100 {
			return NoFailureLimit, bad
		}
		return MaxFailedPercent(v), nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return NoFailureLimit, bad
	}
	return MaxFailedItems(v), nil
}

// Set reports whether l limits anything.
func (l FailureLimit) Set() bool { return l.Count != nil || l.Percent != nil }

// String is the limit as ParseFailureLimit reads it ("" for none).
func (l FailureLimit) String() string {
	switch {
	case l.Count != nil:
		return strconv.FormatInt(*l.Count, 10)
	case l.Percent != nil:
		return strconv.FormatFloat(*l.Percent, 'g', -1, 64) + "%"
	}
	return ""
}

// Validate checks the limit's values.
func (l FailureLimit) Validate() error {
	switch {
	case l.Count != nil && l.Percent != nil:
		return errors.New("options.max_failures: give count or percent, not both")
	case l.Count != nil && *l.Count < 0:
		return fmt.Errorf("options.max_failures.count must not be negative, got %d", *l.Count)
	case l.Percent != nil && (math.IsNaN(*l.Percent) || *l.Percent < 0 || *l.Percent > 100):
		return fmt.Errorf("options.max_failures.percent must be 0 to 100, got %v", *l.Percent)
	}
	return nil
}

// Options are written with durations as integer nanoseconds, as workers
// before the contract read them, so that a fleet upgraded one worker at a
// time keeps running; they are read as strings or nanoseconds.

// UnmarshalJSON reads durations as strings or integer nanoseconds and
// remembers an unknown key for Validate to refuse.
func (o *Options) UnmarshalJSON(data []byte) error {
	type plain Options
	var aux struct {
		*plain
		ItemTimeout json.RawMessage `json:"item_timeout"`
		ItemBackoff json.RawMessage `json:"item_backoff"`
	}
	aux.plain = (*plain)(o)
	unknown, err := decodeStrict(data, &aux)
	if err != nil {
		return err
	}
	if unknown == "" {
		unknown = exactKeys(data, Options{})
	}
	if o.ItemTimeout, err = parseJSONDuration("item_timeout", aux.ItemTimeout); err != nil {
		return err
	}
	if o.ItemBackoff, err = parseJSONDuration("item_backoff", aux.ItemBackoff); err != nil {
		return err
	}
	if unknown != "" {
		o.invalid = "unknown field " + unknown
	}
	return nil
}

// UnmarshalJSON never fails: an unknown key or a value of the wrong type is
// remembered for Validate to refuse, so that a bad input fails the workflow
// at once with the field named, instead of failing its workflow task (which
// Temporal retries forever) or being ignored.
func (in *BatchInput) UnmarshalJSON(data []byte) error {
	type plain BatchInput
	unknown, err := decodeStrict(data, (*plain)(in))
	if err == nil && unknown == "" {
		unknown = exactKeys(data, BatchInput{})
	}
	var ute *json.UnmarshalTypeError
	switch {
	case errors.As(err, &ute) && ute.Field != "":
		in.invalid = fmt.Sprintf("%s: want a JSON %s, got %s", strings.ReplaceAll(ute.Field, "plain.", ""), jsonKind(ute.Type.Kind().String()), ute.Value)
	case err != nil && strings.HasPrefix(err.Error(), "options."):
		in.invalid = err.Error()
	case err != nil:
		in.invalid = "not a valid batch input: " + strings.TrimPrefix(err.Error(), "json: ")
	case unknown != "":
		in.invalid = "unknown field " + unknown
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int64", "float64", "int32":
		return "number"
	case "struct", "map":
		return "object"
	case "slice":
		return "array"
	}
	return goKind
}

// decodeStrict decodes data into v; an unknown key is not an error but is
// returned (quoted) so Validate can name it. Other errors are returned.
func decodeStrict(data []byte, v any) (unknown string, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil {
		return "", nil
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return name, json.Unmarshal(data, v)
	}
	return "", err
}

// exactKeys returns the first key of the JSON object data that matches a
// field of v's type only case-insensitively (encoding/json accepts
// "Processor" for "processor"; the contract does not), quoted, or "".
func exactKeys(data []byte, v any) string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil {
		return ""
	}
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	names := map[string]bool{}
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			names[name] = true
		}
	}
	for k := range obj {
		if !names[k] {
			return strconv.Quote(k)
		}
	}
	return ""
}

func parseJSONDuration(field string, raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("options.%s: %q is not a duration (want e.g. \"90s\" or \"1m\")", field, s)
		}
		return d, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, fmt.Errorf("options.%s: want a duration string such as \"1m\" or integer nanoseconds, got %s", field, raw)
	}
	return time.Duration(n), nil
}
