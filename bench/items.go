package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/batchpipe/batchpipe/inputs"
)

// writeItems writes n items shaped like examples/inputs.jsonl (the example
// processor's {"arg1","arg2"}) as JSON Lines.
func writeItems(path string, n int) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var line []byte
	for i := range n {
		line = append(line[:0], `{"arg1": "item `...)
		line = strconv.AppendInt(line, int64(i), 10)
		line = append(line, `", "arg2": "value `...)
		line = strconv.AppendInt(line, int64(i*7), 10)
		line = append(line, "\"}\n"...)
		w.Write(line)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readItems reads every item of an input file, validated as submit does.
func readItems(path string) ([]json.RawMessage, error) {
	r, err := inputs.Open(path, inputs.Options{})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var items []json.RawMessage
	for {
		it, err := r.Next()
		if err == io.EOF {
			return items, nil
		}
		if err != nil {
			return nil, err
		}
		items = append(items, bytes.Clone(it.JSON))
	}
}
