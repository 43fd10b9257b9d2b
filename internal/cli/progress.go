package cli

import "time"

// rateWindow smooths a batch's rate over its last samples: items/s over the
// window, or nothing until the window spans minSpan (a first tick after a
// shard's jump would otherwise read billions of items/s).
type rateWindow struct {
	samples []rateSample
}

type rateSample struct {
	at   time.Time
	done int64
}

const (
	rateSpan    = 20 * time.Second // how far back the rate looks
	rateMinSpan = 5 * time.Second  // no rate before the samples span this
)

// add records done items at t.
func (w *rateWindow) add(t time.Time, done int64) {
	w.samples = append(w.samples, rateSample{t, done})
	for len(w.samples) > 2 && t.Sub(w.samples[1].at) >= rateSpan {
		w.samples = w.samples[1:]
	}
}

// rate is items/s over the window; ok is false until there is one.
func (w *rateWindow) rate() (float64, bool) {
	if len(w.samples) < 2 {
		return 0, false
	}
	first, last := w.samples[0], w.samples[len(w.samples)-1]
	span := last.at.Sub(first.at)
	if span < rateMinSpan || last.done <= first.done {
		return 0, false
	}
	return float64(last.done-first.done) / span.Seconds(), true
}

// eta is the time left for the rest of total at the window's rate.
func (w *rateWindow) eta(total int64) (time.Duration, bool) {
	r, ok := w.rate()
	if !ok || len(w.samples) == 0 {
		return 0, false
	}
	left := total - w.samples[len(w.samples)-1].done
	return (time.Duration(float64(left)/r) * time.Second).Round(time.Second), true
}
