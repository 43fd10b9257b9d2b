// Command faultproc is the exec processor of the fault suite (package
// faults): it speaks batchpipe's exec protocol (one JSON item per line in,
// one answer per line out) and mimics the built-in example processor,
// slowly enough that a batch can be killed, cancelled or starved of its
// store while it runs.
//
//	faultproc [-sleep 20ms] [-log FILE] [-print-env]
//
// For each item {"arg1": A, "arg2": B, "mode": M} it sleeps -sleep, then
// answers {"output": {"arg1": "activity arg1: A", "arg2": "activity arg2: B"}}.
// With -log, it first appends "<parent pid> <unix ms> <arg1>\n" to FILE (one
// write, O_APPEND), so a test counts how often each item was processed, by
// which worker process and when. With -print-env it first writes its
// whole environment to stderr, one "NAME=value" line each (which the worker
// logs): what a careless or hostile processor would leak. Modes:
//
//	perm   answers a permanent error: "item A refused on purpose"
//	crash  exits with status 3 without answering (a processor that dies)
//	hang   never answers (until its stdin closes or 10 minutes pass)
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

type item struct {
	Arg1 *string `json:"arg1"`
	Arg2 *string `json:"arg2"`
	Mode string  `json:"mode"`
}

type output struct {
	Arg1 string `json:"arg1"`
	Arg2 string `json:"arg2"`
}

func main() {
	sleep := flag.Duration("sleep", 0, "time spent on each item")
	logPath := flag.String("log", "", "append \"<parent pid> <unix ms> <arg1>\" for each item to this file")
	printEnv := flag.Bool("print-env", false, "write the environment to stderr at start")
	flag.Parse()
	if *printEnv {
		for _, kv := range os.Environ() {
			fmt.Fprintln(os.Stderr, kv)
		}
	}
	var logf *os.File
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "faultproc:", err)
			os.Exit(1)
		}
		logf = f
	}
	ppid := os.Getppid()
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for in.Scan() {
		var it item
		if err := json.Unmarshal(in.Bytes(), &it); err != nil {
			enc.Encode(map[string]any{"error": map[string]any{"message": "faultproc: " + err.Error(), "permanent": true}})
			out.Flush()
			continue
		}
		arg1, arg2 := "", ""
		if it.Arg1 != nil {
			arg1 = *it.Arg1
		}
		if it.Arg2 != nil {
			arg2 = *it.Arg2
		}
		if logf != nil {
			fmt.Fprintf(logf, "%d %d %s\n", ppid, time.Now().UnixMilli(), arg1)
		}
		switch it.Mode {
		case "hang":
			go func() { io.Copy(io.Discard, os.Stdin); os.Exit(0) }()
			time.Sleep(10 * time.Minute)
			os.Exit(0)
		case "crash":
			fmt.Fprintf(os.Stderr, "faultproc: crashing on %s on purpose\n", arg1)
			os.Exit(3)
		case "perm":
			enc.Encode(map[string]any{"error": map[string]any{"message": "item " + arg1 + " refused on purpose", "permanent": true}})
			out.Flush()
			continue
		}
		time.Sleep(*sleep)
		if it.Arg1 == nil || it.Arg2 == nil {
			enc.Encode(map[string]any{"error": map[string]any{"message": `input needs string fields "arg1" and "arg2"`, "permanent": true}})
		} else {
			enc.Encode(map[string]any{"output": output{Arg1: "activity arg1: " + arg1, Arg2: "activity arg2: " + arg2}})
		}
		if err := out.Flush(); err != nil {
			os.Exit(0) // the worker is gone
		}
	}
}
