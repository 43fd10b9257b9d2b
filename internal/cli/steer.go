package cli

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// Steering a running batch: pause, resume and update. Each is a Temporal
// Update of the batch's workflow, refused at once (exit 2, nothing
// changed) when the batch cannot take it.

// newSteerCommands are pause, resume and update, for submit's root.
func newSteerCommands(o *IO) []*cobra.Command {
	return []*cobra.Command{newPauseCommand(o), newResumeCommand(o), newUpdateCommand(o)}
}

// steerBatch opens the batch id for a steering command. Like cancel, it
// runs a worker when the batch is on this directory's embedded server, so
// that someone answers the update.
func steerBatch(cmd *cobra.Command, o *IO, f *opsFlags, id string, do func(b *batchpipe.Batch) (batchpipe.Progress, error)) (batchpipe.Progress, error) {
	ctx := cmd.Context()
	if err := manifests.ValidateBatchID(id); err != nil {
		return batchpipe.Progress{}, usageError{err}
	}
	c, err := opsBatchClient(ctx, o, f, id, true)
	if err != nil {
		return batchpipe.Progress{}, err
	}
	defer c.Close()
	b, err := c.Batch(ctx, id)
	if err != nil {
		return batchpipe.Progress{}, inUse(o, err)
	}
	p, err := do(b)
	return p, inUse(o, err)
}

func newPauseCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	var reason string
	cmd := subcommand("pause ID", "Pause a running batch: no shard starts, running shards stop at an item boundary keeping what they did", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			p, err := steerBatch(cmd, o, f, args[0], func(b *batchpipe.Batch) (batchpipe.Progress, error) {
				return b.Pause(cmd.Context(), reason)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(o.Stdout, "batch %s: paused%s\n", p.BatchID, pausedText(p.Progress))
			fmt.Fprintf(o.Stdout, "items: %d/%d done; its running shards stop within seconds, keeping what they processed; `submit resume %s` continues it\n",
				p.Done, p.Items, p.BatchID)
			return nil
		})
	f.register(cmd, false)
	cmd.Flags().StringVar(&reason, "reason", "", "why it is paused (`TEXT`, shown by status, list and the Web UI)")
	return cmd
}

// pausedText is " since T (reason)" of a paused batch's progress.
func pausedText(p pipeline.Progress) string {
	var s strings.Builder
	if p.PausedSince != nil {
		fmt.Fprintf(&s, " since %s", p.PausedSince.UTC().Format(time.RFC3339))
	}
	if p.PauseReason != "" {
		fmt.Fprintf(&s, " (%s)", p.PauseReason)
	}
	return s.String()
}

func newResumeCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	cmd := subcommand("resume ID", "Resume a paused batch: the stopped shards finish their items, then the rest run", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			p, err := steerBatch(cmd, o, f, args[0], func(b *batchpipe.Batch) (batchpipe.Progress, error) {
				return b.Resume(cmd.Context())
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(o.Stdout, "batch %s: resumed, %d/%d items done\n", p.BatchID, p.Done, p.Items)
			return nil
		})
	f.register(cmd, false)
	return cmd
}

func newUpdateCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	var (
		concurrency int
		maxFailures string
		rate        float64
	)
	cmd := subcommand("update ID", "Change a running batch's concurrency, failure limit or rate without restarting it", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			var u batchpipe.Update
			if fl.Changed("concurrency") {
				if concurrency < 1 {
					return usagef("--concurrency must be at least 1, got %d", concurrency)
				}
				u.Concurrency = concurrency
			}
			if fl.Changed("max-failures") {
				s := maxFailures
				if s == "none" {
					s = ""
				}
				l, err := pipeline.ParseFailureLimit(s)
				if err != nil {
					return usagef("--max-failures %v (or none to lift the limit)", err)
				}
				u.MaxFailures = &l
			}
			if fl.Changed("rate") {
				if rate < 0 || math.IsNaN(rate) || math.IsInf(rate, 0) {
					return usagef("--rate must be items per second, 0 or more (0: no limit), got %v", rate)
				}
				u.Rate = &rate
			}
			if u == (batchpipe.Update{}) {
				return usagef("nothing to change: give --concurrency, --max-failures or --rate")
			}
			p, err := steerBatch(cmd, o, f, args[0], func(b *batchpipe.Batch) (batchpipe.Progress, error) {
				return b.Update(cmd.Context(), u)
			})
			if err != nil {
				return err
			}
			limit := "none"
			if p.MaxFailures != nil {
				limit = p.MaxFailures.String()
			}
			r := "none"
			if p.Rate > 0 {
				r = fmt.Sprintf("%g items/s", p.Rate)
			}
			fmt.Fprintf(o.Stdout, "batch %s: concurrency %d, max failures %s, rate %s\n", p.BatchID, p.Concurrency, limit, r)
			return nil
		})
	f.register(cmd, false)
	fl := cmd.Flags()
	fl.IntVar(&concurrency, "concurrency", 0, "shards in flight (`N`, at least 1): narrower as running shards finish, wider at once")
	fl.StringVar(&maxFailures, "max-failures", "", "failure limit: `N` items or N% of the batch's items, or none; a limit already exceeded stops the batch as failed")
	fl.Float64Var(&rate, "rate", 0, "items per second across the batch (`R`, 0: no limit); shards started from now on get their share")
	return cmd
}
