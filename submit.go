package batchpipe

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/inputs"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// Request is one batch to submit. Zero values take the defaults (those of
// pipeline.DefaultOptions); for a batch id that exists already, a zero value
// means "as that batch has it", and a value that differs is refused.
type Request struct {
	// BatchID names the batch; "" makes one up from the input's name and
	// the time. Submitting an existing id with the same input attaches to
	// that batch (or reports it, finished); with another input it fails
	// with ErrConflict.
	BatchID string
	// Input is a local file path, or the URL of an object in a blob store
	// (s3://bucket/key, minio://host:port/bucket/key, file:///path), which
	// a worker stages.
	Input string
	// Reader, if set, is read for the items instead of opening Input; Input
	// then only names them (default "stdin").
	Reader io.Reader
	// Name names the input in the batch's manifest (input.source) and its
	// default id; "" means Input as given.
	Name string
	// Format is "jsonl" or "csv"; "" picks it from the name.
	Format string
	// FromFailures reads failure lines ({"index","input","error"}, as
	// `submit results --failed` prints them) and submits their inputs.
	FromFailures bool
	// MaxItemBytes is the largest input item; 0 means 1 MiB.
	MaxItemBytes int

	// Processor names the processor run on each item; "" means "example".
	Processor string
	// ShardSize is the number of items per shard (one child workflow
	// each); 0 sizes it from the input (pipeline.ShardSizeFor).
	ShardSize int
	// Concurrency is the number of shards in flight; 0 means 32.
	Concurrency int
	// MaxFailures stops the batch as failed once exceeded; the zero value
	// is no limit.
	MaxFailures FailureLimit
	// ItemTimeout bounds one attempt at one item; 0 means a minute.
	ItemTimeout time.Duration
	// ItemAttempts counts attempts per item, the first included; 0 means 3.
	ItemAttempts int
	// ItemParallelism is the items processed at once within a shard; 0
	// means 8.
	ItemParallelism int
	// ItemBackoff is the wait before an item's second attempt, doubling
	// after; 0 means a second.
	ItemBackoff time.Duration
	// ItemsPerCall is how many items a batch processor (a
	// pipeline.BatchProcessor, an exec processor) gets in one call; 0
	// means 1.
	ItemsPerCall int
	// ItemContext sends exec processors each item in an envelope with
	// its batch id, index, attempt and key (see execproc.Pool).
	ItemContext bool
	// ResultsIncludeInput has each result line carry its item's input,
	// as "input".
	ResultsIncludeInput bool
	// Rate is the most items per second handed to processors across the
	// whole batch; 0 means no limit, otherwise at least 1. Each of the
	// Concurrency shards in flight gets Rate/Concurrency, so set
	// Concurrency to the shards the workers run at once.
	Rate float64
	// Canary runs shard 0 alone first: the rest of the batch starts only
	// if no more of its items failed than CanaryMaxFailures allows (a
	// count, or a percent of shard 0's items; the zero value allows
	// none), and the batch ends failed otherwise, naming the canary's
	// first errors.
	Canary            bool
	CanaryMaxFailures FailureLimit
	// Priority is the Temporal task priority of the batch's shards, 1
	// (highest) to 5; 0 means Temporal's default, 3. Batches of a higher
	// priority on the same task queue run their shards first.
	Priority int
	// FairnessKey groups batches that share the workers evenly with the
	// other keys of their priority (Temporal fairness, on a server that
	// enables it, as the embedded one does); "" is the batch's own id.
	// FairnessWeight weighs the key's share; 0 means 1.
	FairnessKey    string
	FairnessWeight float64
	// ShardsPerRun is the shards one workflow run starts before it
	// continues as new; 0 means 500. Tests lower it to see many runs.
	ShardsPerRun int
}

// Submit stages r's input and starts its batch, or attaches to the batch
// that has its id. The start is the claim on the id: each submit stages
// into a staging directory of its own, and only the one whose workflow
// starts owns the id; the others compare their input with that batch's and
// attach to it (same items) or fail with ErrConflict, deleting what they
// staged. A bad request or bad input fails with ErrInvalid, before
// anything is written or left behind.
//
// The returned Batch is running, or finished before (Batch.Attached and
// Batch.Finished say which); Wait follows it to its manifest.
func (c *Client) Submit(ctx context.Context, r Request) (*Batch, error) {
	if remote(r) {
		if err := CheckInputURL(r.Input); err != nil {
			return nil, err
		}
	}
	spec, err := c.specFor(r)
	if err != nil {
		return nil, err
	}
	if remote(r) {
		return c.submitRemote(ctx, r, spec)
	}
	return c.submitLocal(ctx, r, spec)
}

// BatchOptions are the options a new batch of r gets: r's, with defaults
// for its zero values (ShardSize stays 0: sized from the input), checked.
func (r Request) BatchOptions() (pipeline.Options, error) {
	if r.Input == "" && r.Reader == nil {
		r.Input = "-" // options only
	}
	spec, err := (&Client{}).specFor(r)
	return spec.Options, err
}

// specFor checks r and returns the batch input it starts, without the
// staged counts.
func (c *Client) specFor(r Request) (pipeline.BatchInput, error) {
	o := pipeline.DefaultOptions()
	if r.Processor != "" {
		o.Processor = r.Processor
	}
	o.ShardSize = r.ShardSize
	setIf(&o.Concurrency, r.Concurrency)
	setIf(&o.ItemTimeout, r.ItemTimeout)
	setIf(&o.ItemAttempts, r.ItemAttempts)
	setIf(&o.ItemParallelism, r.ItemParallelism)
	setIf(&o.ItemBackoff, r.ItemBackoff)
	setIf(&o.ShardsPerRun, r.ShardsPerRun)
	o.ItemsPerCall, o.ItemContext, o.Rate = r.ItemsPerCall, r.ItemContext, r.Rate
	o.ResultsIncludeInput = r.ResultsIncludeInput
	o.MaxFailures = r.MaxFailures
	o.Canary, o.CanaryMaxFailures = r.Canary, r.CanaryMaxFailures
	o.Priority, o.FairnessKey, o.FairnessWeight = r.Priority, r.FairnessKey, r.FairnessWeight
	switch {
	case r.ShardSize < 0:
		return pipeline.BatchInput{}, invalidf("shard size must be at least 1, got %d", r.ShardSize)
	case r.Concurrency < 0:
		return pipeline.BatchInput{}, invalidf("concurrency must be at least 1, got %d", r.Concurrency)
	case r.ItemAttempts < 0:
		return pipeline.BatchInput{}, invalidf("item attempts must be at least 1, got %d", r.ItemAttempts)
	case r.ItemParallelism < 0:
		return pipeline.BatchInput{}, invalidf("item parallelism must be at least 1, got %d", r.ItemParallelism)
	case r.ItemBackoff < 0 || r.ShardsPerRun < 0:
		return pipeline.BatchInput{}, invalidf("item backoff and shards per run must not be negative")
	case r.ItemTimeout < 0:
		return pipeline.BatchInput{}, invalidf("item timeout must be positive, got %v", r.ItemTimeout)
	case r.MaxItemBytes < 0:
		return pipeline.BatchInput{}, invalidf("max item size must be at least 1, got %d", r.MaxItemBytes)
	case r.Format != "" && r.Format != "jsonl" && r.Format != "csv":
		return pipeline.BatchInput{}, invalidf("format %q: want jsonl or csv", r.Format)
	case r.Input == "" && r.Reader == nil:
		return pipeline.BatchInput{}, invalidf("no input: give Request.Input (a path or an object URL) or Request.Reader")
	}
	if c != nil && c.cfg.Processors != nil {
		if err := c.cfg.Processors.Check(o.Processor); err != nil {
			return pipeline.BatchInput{}, invalidf("processor: %v", err)
		}
	}
	id := r.BatchID
	if id == "" {
		id = DefaultBatchID(inputName(r))
	}
	spec := pipeline.BatchInput{BatchID: id, Store: c.storeURL, Source: inputName(r), Options: o}
	if remote(r) {
		spec.InputURL, spec.InputFormat, spec.MaxItemBytes = r.Input, r.Format, r.MaxItemBytes
	} else {
		spec.Shards, spec.Items, spec.Options.ShardSize = 1, 1, 1 // checked with placeholders; staging sets them
	}
	check := spec
	if check.Store == "" {
		check.Store = "mem://" // BatchOptions: no client, no store
	}
	if err := check.Validate(); err != nil {
		return spec, invalidf("%v", err)
	}
	return spec, nil
}

func setIf[T comparable](dst *T, v T) {
	var zero T
	if v != zero {
		*dst = v
	}
}

func remote(r Request) bool { return r.Reader == nil && strings.Contains(r.Input, "://") }

func inputName(r Request) string {
	switch {
	case remote(r):
		return blobstore.Redact(r.Input)
	case r.Name != "":
		return r.Name
	case r.Input == "-" || r.Input == "" && r.Reader != nil:
		return "stdin"
	}
	return r.Input
}

func (c *Client) submitLocal(ctx context.Context, r Request, spec pipeline.BatchInput) (b *Batch, err error) {
	src, err := openInputCtx(ctx, r)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	// A read blocked on a silent FIFO ends when ctx does.
	defer context.AfterFunc(ctx, src.Abort)()
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("reading %s: %w", inputName(r), ctx.Err())
		}
	}()
	var items pipeline.ItemSource = src
	if r.FromFailures {
		items = pipeline.FailureInputs(spec.Source, src)
	}
	id := spec.BatchID

	// An id the store knows already: compare without writing anything.
	if existing, ok, err := c.knownBatch(ctx, id); err != nil {
		return nil, err
	} else if ok {
		_, sha, err := pipeline.Fingerprint(items)
		if err != nil {
			return nil, inputError(err)
		}
		return c.attach(ctx, r, existing, sha, "")
	}

	shardSize := r.ShardSize
	if shardSize == 0 {
		slots := spec.Options.Concurrency
		if c.cfg.WorkerSlots > 0 {
			slots = min(slots, c.cfg.WorkerSlots)
		}
		shardSize, items, err = pipeline.ChooseShardSize(ctx, items, pipeline.AutoSize{Slots: slots, InputBytes: inputSize(r), Read: src.BytesRead})
		if err != nil {
			return nil, inputError(err)
		}
	}
	dir := newStagingDir()
	staged, err := pipeline.Stage(ctx, c.store, id, dir, spec.Source, items, shardSize, nil)
	if err != nil {
		return nil, inputError(err)
	}
	spec.Items, spec.Shards, spec.Options.ShardSize = staged.Items, staged.Shards, staged.ShardSize
	spec.InputDir, spec.InputSHA256 = dir, staged.SHA256
	discard := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = layout.DeleteStaged(cctx, c.store, id, dir)
	}
	tc, err := c.Temporal(ctx)
	if err != nil {
		discard()
		return nil, err
	}
	_, err = pipeline.Start(ctx, tc, c.cfg.TaskQueue, spec)
	if errors.Is(err, pipeline.ErrAlreadyStarted) {
		discard() // another submit owns the id: compare with its input
		existing, serr := pipeline.StartedInput(ctx, tc, id)
		if serr != nil {
			return nil, fmt.Errorf("batch %s exists but its input cannot be read: %w", id, serr)
		}
		return c.attach(ctx, r, existing, staged.SHA256, "")
	}
	if err != nil {
		discard()
		return nil, fmt.Errorf("starting batch %s: %w", id, err)
	}
	// The id is ours: keep the start parameters, for redrive (finalize
	// writes them too if this process dies first).
	if err := pipeline.SaveSpec(ctx, c.store, spec); err != nil {
		c.cfg.Logger.Warn("saving the batch's spec (finalize writes it)", "batch_id", id, "error", err)
	}
	return c.newBatch(id, spec, false, false), nil
}

func (c *Client) submitRemote(ctx context.Context, r Request, spec pipeline.BatchInput) (*Batch, error) {
	if r.FromFailures {
		return nil, invalidf("FromFailures reads local files; download %s first", blobstore.Redact(r.Input))
	}
	id := spec.BatchID
	if existing, ok, err := c.knownBatch(ctx, id); err != nil {
		return nil, err
	} else if ok {
		return c.attach(ctx, r, existing, "", r.Input)
	}
	tc, err := c.Temporal(ctx)
	if err != nil {
		return nil, err
	}
	_, err = pipeline.Start(ctx, tc, c.cfg.TaskQueue, spec)
	if errors.Is(err, pipeline.ErrAlreadyStarted) {
		existing, serr := pipeline.StartedInput(ctx, tc, id)
		if serr != nil {
			return nil, fmt.Errorf("batch %s exists but its input cannot be read: %w", id, serr)
		}
		return c.attach(ctx, r, existing, "", r.Input)
	}
	if err != nil {
		return nil, fmt.Errorf("starting batch %s: %w", id, err)
	}
	return c.newBatch(id, spec, false, false), nil
}

// knownBatch returns what the store or Temporal knows of id's batch: its
// spec, the input of its workflow, or (for batches staged before staging
// directories) its staged index.
func (c *Client) knownBatch(ctx context.Context, id string) (pipeline.BatchInput, bool, error) {
	spec, err := pipeline.ReadSpec(ctx, c.store, id)
	if err == nil {
		return spec, true, nil
	}
	if !errors.Is(err, blobstore.ErrNotFound) {
		return spec, false, err
	}
	if c.Connected() {
		tc, _ := c.Temporal(ctx)
		if in, err := pipeline.StartedInput(ctx, tc, id); err == nil {
			return in, true, nil
		}
	}
	if st, err := layout.ReadStaged(ctx, c.store, id, ""); err == nil {
		return pipeline.BatchInput{BatchID: id, Store: c.storeURL, Source: st.Source, Items: st.Items, Shards: st.Shards,
			InputSHA256: st.SHA256, Options: pipeline.Options{ShardSize: st.ShardSize}}, true, nil
	}
	if ok, _ := blobstore.Exists(ctx, c.store, manifests.ManifestKey(id)); ok {
		return pipeline.BatchInput{BatchID: id}, true, nil
	}
	if ok, _ := blobstore.Exists(ctx, c.store, manifests.CollectedKey(id)); ok {
		return pipeline.BatchInput{}, false, kindf(ErrConflict, "batch %s finished and its results were deleted by gc (its input was kept); choose another batch id", id)
	}
	return spec, false, nil
}

// attach returns the existing batch if it has the request's input (sha for
// a local input, url for a remote one) and no option the request sets
// differs; otherwise ErrConflict, saying what the batch is.
func (c *Client) attach(ctx context.Context, r Request, existing pipeline.BatchInput, sha, url string) (*Batch, error) {
	id := existing.BatchID
	if existing.InputSHA256 == "" && existing.InputURL == "" && existing.Shards > 0 {
		// Started before the input's identity travelled with the batch.
		if st, err := layout.ReadStaged(ctx, c.store, id, existing.InputDir); err == nil {
			existing.InputSHA256 = st.SHA256
		}
	}
	same := sha != "" && sha == existing.InputSHA256 || url != "" && url == existing.InputURL
	if existing.InputSHA256 == "" && existing.InputURL == "" {
		// Only a manifest is left (a worker's staging that failed, or a
		// store without the batch's spec): report the batch as it ended.
		if finished, _ := blobstore.Exists(ctx, c.store, manifests.ManifestKey(id)); finished {
			return c.newBatch(id, existing, true, true), nil
		}
	}
	if !same {
		what := existing.Source
		if existing.Items > 0 {
			what = fmt.Sprintf("%s, %d items", existing.Source, existing.Items)
		}
		return nil, kindf(ErrConflict, "batch %s already exists with a different input (%s); choose another batch id", id, what)
	}
	if diff := optionConflicts(r, existing.Options); len(diff) > 0 {
		return nil, kindf(ErrConflict, "batch %s already exists with %s; leave those out to attach to it, or choose another batch id",
			id, strings.Join(diff, ", "))
	}
	finished, _ := blobstore.Exists(ctx, c.store, manifests.ManifestKey(id))
	return c.newBatch(id, existing, true, finished), nil
}

// optionConflicts lists the options r sets that the batch has otherwise.
func optionConflicts(r Request, have pipeline.Options) []string {
	var diff []string
	add := func(name string, asked, has any) {
		diff = append(diff, fmt.Sprintf("%s %v (asked: %v)", name, has, asked))
	}
	if r.Processor != "" && have.Processor != "" && r.Processor != have.Processor {
		add("processor", r.Processor, have.Processor)
	}
	if r.ShardSize != 0 && have.ShardSize != 0 && r.ShardSize != have.ShardSize {
		add("shard size", r.ShardSize, have.ShardSize)
	}
	if r.Concurrency != 0 && have.Concurrency != 0 && r.Concurrency != have.Concurrency {
		add("concurrency", r.Concurrency, have.Concurrency)
	}
	if r.MaxFailures.Set() && r.MaxFailures.String() != have.MaxFailures.String() {
		add("max failures", r.MaxFailures.String(), orNone(have.MaxFailures.String()))
	}
	if r.ItemTimeout != 0 && have.ItemTimeout != 0 && r.ItemTimeout != have.ItemTimeout {
		add("item timeout", r.ItemTimeout, have.ItemTimeout)
	}
	if r.ItemAttempts != 0 && have.ItemAttempts != 0 && r.ItemAttempts != have.ItemAttempts {
		add("item attempts", r.ItemAttempts, have.ItemAttempts)
	}
	if r.ItemParallelism != 0 && have.ItemParallelism != 0 && r.ItemParallelism != have.ItemParallelism {
		add("item parallelism", r.ItemParallelism, have.ItemParallelism)
	}
	if r.ItemsPerCall != 0 && max(1, r.ItemsPerCall) != max(1, have.ItemsPerCall) {
		add("items per call", r.ItemsPerCall, max(1, have.ItemsPerCall))
	}
	if r.ItemContext && !have.ItemContext {
		add("item context", "on", "off")
	}
	if r.ResultsIncludeInput && !have.ResultsIncludeInput {
		add("results include input", "on", "off")
	}
	if r.Rate != 0 && r.Rate != have.Rate {
		add("rate", r.Rate, orNone(rateString(have.Rate)))
	}
	if r.Canary && !have.Canary {
		add("canary", "on", "off")
	}
	if r.CanaryMaxFailures.Set() && r.CanaryMaxFailures.String() != have.CanaryLimit().String() {
		add("canary max failures", r.CanaryMaxFailures.String(), have.CanaryLimit().String())
	}
	if r.Priority != 0 && r.Priority != have.Priority {
		add("priority", r.Priority, orDefault(have.Priority))
	}
	if r.FairnessKey != "" && r.FairnessKey != have.FairnessKey {
		add("fairness key", r.FairnessKey, orNone(have.FairnessKey))
	}
	if r.FairnessWeight != 0 && r.FairnessWeight != have.FairnessWeight {
		add("fairness weight", r.FairnessWeight, max(1, have.FairnessWeight))
	}
	return diff
}

func rateString(r float64) string {
	if r == 0 {
		return ""
	}
	return strconv.FormatFloat(r, 'g', -1, 64) + "/s"
}

// orDefault is a priority as the batch runs with it: 0 is the default, 3.
func orDefault(p int) string {
	if p == 0 {
		return "3 (the default)"
	}
	return strconv.Itoa(p)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// newStagingDir names a submit's own staging directory.
func newStagingDir() string {
	var b [8]byte
	rand.Read(b[:])
	return "s-" + hex.EncodeToString(b[:])
}

// DefaultBatchID names a batch after its input and the time:
// <input name>-<UTC time>-<4 hex>.
func DefaultBatchID(input string) string {
	base := filepath.Base(input)
	if input == "-" || input == "" {
		base = "stdin"
	}
	for _, ext := range []string{".gz", ".zst", ".jsonl", ".ndjson", ".json", ".csv"} {
		base = strings.TrimSuffix(base, ext)
	}
	var clean strings.Builder
	for _, c := range base {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			clean.WriteRune(c)
		} else {
			clean.WriteByte('-')
		}
	}
	var r [2]byte
	rand.Read(r[:])
	name := strings.Trim(clean.String(), "-_")
	if name == "" {
		name = "batch"
	}
	if len(name) > 100 {
		name = name[:100]
	}
	return fmt.Sprintf("%s-%s-%s", name, time.Now().UTC().Format("20060102T150405Z"), hex.EncodeToString(r[:]))
}

// openInputCtx is openInput that gives up when ctx ends: opening a FIFO
// blocks until a writer opens it.
func openInputCtx(ctx context.Context, r Request) (*inputs.Reader, error) {
	type opened struct {
		ir  *inputs.Reader
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		ir, err := openInput(r)
		ch <- opened{ir, err}
	}()
	select {
	case o := <-ch:
		return o.ir, o.err
	case <-ctx.Done():
		go func() { // the open may still succeed: close what it opens
			if o := <-ch; o.ir != nil {
				o.ir.Close()
			}
		}()
		return nil, fmt.Errorf("waiting for %s to open: %w", inputName(r), ctx.Err())
	}
}

func openInput(r Request) (*inputs.Reader, error) {
	opts := inputs.Options{Format: inputs.Format(r.Format), MaxItemBytes: r.MaxItemBytes}
	var (
		ir  *inputs.Reader
		err error
	)
	switch {
	case r.Reader != nil:
		ir, err = inputs.NewReader(inputName(r), r.Reader, opts)
	case r.Input == "-":
		ir, err = inputs.NewReader(inputName(r), os.Stdin, opts)
	default:
		ir, err = inputs.Open(r.Input, opts)
	}
	if err != nil {
		return nil, inputError(err)
	}
	return ir, nil
}

// inputError makes bad input an ErrInvalid; read failures stay as they are.
func inputError(err error) error {
	var ie *inputs.Error
	if errors.As(err, &ie) && (ie.Err == nil || errors.Is(ie.Err, inputs.ErrNoItems) || errors.Is(ie.Err, os.ErrNotExist) || errors.Is(ie.Err, os.ErrPermission)) {
		return &Error{Kind: ErrInvalid, Err: err}
	}
	return err
}

// CheckInputURL rejects an input URL that cannot work before anything starts.
func CheckInputURL(rawURL string) error {
	if blobstore.Redact(rawURL) != rawURL {
		return invalidf("input URL %s must not contain credentials: set them in the environment", blobstore.Redact(rawURL))
	}
	if _, _, err := blobstore.SplitObjectURL(rawURL); err != nil {
		return &Error{Kind: ErrInvalid, Err: err}
	}
	if scheme, _, _ := strings.Cut(rawURL, "://"); !slices.Contains(blobstore.Schemes(), scheme) {
		return invalidf("input URL %s: unknown scheme %q (known: %s)", rawURL, scheme, strings.Join(blobstore.Schemes(), ", "))
	}
	return nil
}

// inputSize is the size of a regular input file, for the automatic shard
// size; 0 for stdin, pipes, FIFOs and devices, which are read once as the
// stream they are.
func inputSize(r Request) int64 {
	if r.Reader != nil || r.Input == "-" {
		return 0
	}
	if fi, err := os.Stat(r.Input); err == nil && fi.Mode().IsRegular() {
		return fi.Size()
	}
	return 0
}
