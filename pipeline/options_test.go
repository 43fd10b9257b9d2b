package pipeline_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/pipeline"
)

func decodeInput(t *testing.T, s string) pipeline.BatchInput {
	t.Helper()
	var in pipeline.BatchInput
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		t.Fatalf("UnmarshalJSON must not fail (Validate reports): %v", err)
	}
	return in
}

func TestBatchInputValidateNamesTheField(t *testing.T) {
	cases := []struct{ json, want string }{
		{`{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo","shard_sizee":5}}`, `unknown field "shard_sizee"`},
		{`{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","optionz":{}}`, `unknown field "optionz"`},
		{`{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo","item_timeout":"soon"}}`, `item_timeout`},
		{`{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo","concurrency":"8"}}`, `concurrency`},
		{`{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{}}`, `options.processor is required`},
		{`{"batch_id":"b","store":"mem://x","options":{"processor":"echo"}}`, `input_url is required`},
		{`{"batch_id":"","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo"}}`, `batch_id`},
		{`{"batch_id":"b","input_url":"mem://x/in.jsonl","options":{"processor":"echo"}}`, `store is required`},
		{`{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo","max_failures":{"percent":101}}}`, `max_failures.percent`},
		{`{"batch_id":"b","store":"mem://x","items":10,"shards":3,"options":{"processor":"echo","shard_size":5}}`, `shards (3) does not match`},
		{`[1,2]`, `not a valid batch input`},
		{`{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"Processor":"echo"}}`, `unknown field "Processor"`},
		{`{"BATCH_ID":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo"}}`, `unknown field "BATCH_ID"`},
		{`{"batch_id":"b","store":"s4://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo"}}`, `store "s4://x": unknown scheme "s4"`},
		{`{"batch_id":"b","store":"mem://x","input_url":"ftp://x/in.jsonl","options":{"processor":"echo"}}`, `input_url "ftp://x/in.jsonl": unknown scheme "ftp"`},
		{`{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo","concurrency":"8"}}`, `options.concurrency: want a JSON number`},
		{`{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo","priority":6}}`, `options.priority must be 1 (highest) to 5`},
		{`{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo","fairness_weight":5000}}`, `options.fairness_weight`},
		{`{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo","fairness_key":"` + strings.Repeat("k", 65) + `"}}`, `options.fairness_key must be at most 64 bytes`},
		{`{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo","canary_max_failures":{"count":1}}}`, `options.canary_max_failures needs options.canary`},
		{`{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo","canary":true,"canary_max_failures":{"percent":101}}}`, `options.canary_max_failures.percent must be 0 to 100`},
	}
	for _, c := range cases {
		in := decodeInput(t, c.json)
		err := in.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate = %v, want an error naming %q", c.json, err, c.want)
		}
	}
}

func TestBatchInputDefaultsAndDurations(t *testing.T) {
	in := decodeInput(t, `{"batch_id":"b","store":"mem://x","input_url":"mem://x/in.jsonl","options":{"processor":"echo","item_timeout":"90s","item_backoff":250000000}}`)
	if err := in.Validate(); err != nil {
		t.Fatal(err)
	}
	o := in.Options
	d := pipeline.DefaultOptions()
	if o.ItemTimeout != 90*time.Second || o.ItemBackoff != 250*time.Millisecond {
		t.Errorf("durations: timeout %v backoff %v, want 90s and 250ms", o.ItemTimeout, o.ItemBackoff)
	}
	if o.Concurrency != d.Concurrency || o.ShardsPerRun != d.ShardsPerRun || o.ItemAttempts != d.ItemAttempts || o.ItemParallelism != d.ItemParallelism {
		t.Errorf("zero options not defaulted: %+v", o)
	}
	if o.ShardSize != 0 || o.MaxFailures.Set() {
		t.Errorf("shard size %d (want 0: sized from the input), max failures %v (want none)", o.ShardSize, o.MaxFailures)
	}
	// Round trip: durations are written as nanoseconds (what workers before
	// the contract read) and read back.
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"item_timeout":90000000000`) {
		t.Errorf("marshalled %s, want item_timeout in nanoseconds", data)
	}
	back := decodeInput(t, string(data))
	if err := back.Validate(); err != nil || back.Options.ItemTimeout != 90*time.Second {
		t.Errorf("round trip: %v, %v", err, back.Options.ItemTimeout)
	}
}

func TestFailureLimitZeroStopsAtFirstFailure(t *testing.T) {
	for _, s := range []string{"0", "0%"} {
		l, err := pipeline.ParseFailureLimit(s)
		if err != nil {
			t.Fatal(err)
		}
		if l.Exceeded(0, 100) || !l.Exceeded(1, 100) {
			t.Errorf("%s: exceeded(0)=%v exceeded(1)=%v, want false, true", s, l.Exceeded(0, 100), l.Exceeded(1, 100))
		}
		var back pipeline.FailureLimit
		data, _ := json.Marshal(l)
		json.Unmarshal(data, &back)
		if !back.Exceeded(1, 100) {
			t.Errorf("%s: lost in JSON %s", s, data)
		}
	}
	// No limit: the zero value, and {} in histories recorded before.
	var legacy pipeline.FailureLimit
	json.Unmarshal([]byte(`{}`), &legacy)
	if legacy.Exceeded(1000, 1000) || pipeline.NoFailureLimit.Exceeded(1000, 1000) {
		t.Error("no limit stops a batch")
	}
	for _, bad := range []string{"NaN%", "-1", "101%", "x", "1.5"} {
		if _, err := pipeline.ParseFailureLimit(bad); err == nil {
			t.Errorf("ParseFailureLimit(%q) accepted", bad)
		}
	}
}
