package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Typed adapts a function over Go values to a Processor: each item is
// decoded into In (a struct, so that inputs can grow fields without
// breaking the processor), the result encoded from Out. An item that does
// not decode into In fails permanently, naming the field and what it got
// (a retry would decode it no better); unknown fields are allowed. The
// function's errors are treated as Process's (Permanent, RetryAfter or
// retried).
//
//	type In struct{ Text string `json:"text"` }
//	type Out struct{ Upper string `json:"upper"` }
//	reg.Register("upper", pipeline.Typed(func(ctx context.Context, in In) (Out, error) {
//		return Out{Upper: strings.ToUpper(in.Text)}, nil
//	}))
func Typed[In, Out any](f func(ctx context.Context, in In) (Out, error)) Processor {
	return ProcessorFunc(func(ctx context.Context, raw json.RawMessage) (json.RawMessage, error) {
		var in In
		if err := decodeItem(raw, &in); err != nil {
			return nil, err
		}
		out, err := f(ctx, in)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	})
}

// TypedBatch is Typed for a function over many items at once (see
// BatchProcessor): it gets the items that decoded, in order, and returns
// one Out per item, or an error that fails them all. An item that does not
// decode fails alone, permanently.
func TypedBatch[In, Out any](f func(ctx context.Context, in []In) ([]Out, error)) BatchProcessor {
	return Batched(func(ctx context.Context, items []Item) []Outcome {
		outs := make([]Outcome, len(items))
		ins := make([]In, 0, len(items))
		pos := make([]int, 0, len(items)) // positions in items of ins
		for i, it := range items {
			var in In
			if err := decodeItem(it.Input, &in); err != nil {
				outs[i].Err = err
				continue
			}
			ins, pos = append(ins, in), append(pos, i)
		}
		if len(ins) == 0 {
			return outs
		}
		res, err := f(ctx, ins)
		if err == nil && len(res) != len(ins) {
			err = fmt.Errorf("processor returned %d results for %d items", len(res), len(ins))
		}
		for n, i := range pos {
			if err != nil {
				outs[i].Err = err
				continue
			}
			outs[i].Output, outs[i].Err = json.Marshal(res[n])
		}
		return outs
	})
}

// decodeItem decodes one item into v, or returns a permanent error that
// names the field.
func decodeItem(raw json.RawMessage, v any) error {
	err := json.NewDecoder(bytes.NewReader(raw)).Decode(v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return Permanent(fmt.Errorf("input field %q: want %s, got a JSON %s", te.Field, te.Type, te.Value))
	}
	return Permanent(fmt.Errorf("input does not decode: %v", err))
}
