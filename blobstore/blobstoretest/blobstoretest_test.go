package blobstoretest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"iter"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/blobstore/blobstoretest"
)

// faulty is a map-backed driver with one deliberate defect, to show that the
// suite catches broken drivers.
type faulty struct {
	defect string
	mu     sync.Mutex
	objs   map[string][]byte
}

func (f *faulty) Put(ctx context.Context, key string, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil && f.defect != "partial-put" {
		return err
	}
	f.mu.Lock()
	f.objs[key] = data // with partial-put: keeps what was read before the error
	f.mu.Unlock()
	return err
}

func (f *faulty) NewRangeReader(_ context.Context, key string, off, n int64) (io.ReadCloser, error) {
	f.mu.Lock()
	data, ok := f.objs[key]
	f.mu.Unlock()
	if !ok {
		if f.defect == "unmapped-not-found" {
			return nil, errors.New("404")
		}
		return nil, &blobstore.Error{Kind: blobstore.ErrNotFound}
	}
	if f.defect == "open-range-from-start" && n < 0 {
		off = 0 // serves "the rest from off" as the whole object
	}
	data = data[min(off, int64(len(data))):]
	if n >= 0 && n < int64(len(data)) {
		data = data[:n]
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func (f *faulty) Stat(_ context.Context, key string) (blobstore.Attributes, error) {
	f.mu.Lock()
	data, ok := f.objs[key]
	f.mu.Unlock()
	if !ok {
		if f.defect == "unmapped-not-found" {
			return blobstore.Attributes{}, errors.New("404")
		}
		return blobstore.Attributes{}, &blobstore.Error{Kind: blobstore.ErrNotFound}
	}
	return blobstore.Attributes{Key: key, Size: int64(len(data)), ModTime: time.Now()}, nil
}

func (f *faulty) List(_ context.Context, prefix string) iter.Seq2[blobstore.Attributes, error] {
	return func(yield func(blobstore.Attributes, error) bool) {
		f.mu.Lock()
		var keys []string
		for k := range f.objs {
			if strings.HasPrefix(k, prefix) {
				keys = append(keys, k)
			}
		}
		f.mu.Unlock()
		slices.Sort(keys)
		switch f.defect {
		case "first-page-only":
			keys = keys[:min(1000, len(keys))]
		case "unsorted-list":
			slices.Reverse(keys)
		}
		for _, k := range keys {
			if !yield(blobstore.Attributes{Key: k, Size: int64(len(f.objs[k]))}, nil) {
				return
			}
		}
	}
}

func (f *faulty) Delete(_ context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.objs, key)
	return nil
}

func (f *faulty) Close() error { return nil }

func init() {
	stores := map[string]*faulty{}
	var mu sync.Mutex
	blobstore.Register("faulty", func(_ context.Context, u *url.URL) (blobstore.Driver, string, error) {
		mu.Lock()
		defer mu.Unlock()
		f := stores[u.Host]
		if f == nil {
			f = &faulty{defect: u.Query().Get("defect"), objs: map[string][]byte{}}
			stores[u.Host] = f
		}
		return f, strings.TrimPrefix(u.Path, "/"), nil
	})
}

// TestFaultyTarget runs the suite against the defect named by
// BLOBSTORETEST_DEFECT; TestSuiteCatchesBrokenDrivers runs it in a child
// process and expects it to fail.
func TestFaultyTarget(t *testing.T) {
	defect := os.Getenv("BLOBSTORETEST_DEFECT")
	if defect == "" {
		t.Skip("run by TestSuiteCatchesBrokenDrivers in a child process")
	}
	blobstoretest.Run(t, blobstoretest.Harness{
		NewURL: func(t *testing.T) string {
			return "faulty://" + strings.ReplaceAll(t.Name(), "/", "_") + "?defect=" + defect
		},
		InMemory: true,
	})
}

func TestSuiteCatchesBrokenDrivers(t *testing.T) {
	for defect, wantFailed := range map[string]string{
		"partial-put":        "FailingReaderLeavesNothing",
		"unmapped-not-found": "NotFound",
		"first-page-only":    "ListPagesInOrder",
		"unsorted-list":      "ListPagesInOrder",
		// A resumed staging reads the rest of an object from an offset.
		"open-range-from-start": "RangedRead",
	} {
		t.Run(defect, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestFaultyTarget$", "-test.v")
			cmd.Env = append(os.Environ(), "BLOBSTORETEST_DEFECT="+defect)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a driver with defect %s:\n%s", defect, out)
			}
			if !strings.Contains(string(out), "--- FAIL: TestFaultyTarget/NoPrefix/"+wantFailed) {
				t.Fatalf("defect %s: want subtest %s to fail; output:\n%s", defect, wantFailed, out)
			}
			// A healthy check still passes, so failures are specific.
			if !strings.Contains(string(out), "--- PASS: TestFaultyTarget/NoPrefix/RoundTripSmall") {
				t.Fatalf("defect %s: RoundTripSmall did not pass:\n%s", defect, out)
			}
		})
	}
}
