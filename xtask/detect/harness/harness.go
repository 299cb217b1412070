// Package harness gives the corpus programs the same flags, clock and
// output, so `cargo xtask detect` can drive and compare them.
package harness

import (
	"flag"
	"fmt"
	"math/rand"
	"sync/atomic"
	"time"
)

// Run is one run of a corpus program.
type Run struct {
	// WriteEvery is the mean interval between racing writes.
	WriteEvery time.Duration
	deadline   time.Time
	ops        atomic.Uint64
}

// Start parses the flags, prints the start line and starts the clock.
func Start() *Run {
	duration := flag.Duration("duration", 3*time.Second, "how long to work")
	every := flag.Duration("write-every", 75*time.Millisecond, "mean interval between racing writes")
	flag.Parse()
	r := &Run{WriteEvery: *every}
	now := time.Now()
	r.deadline = now.Add(*duration)
	fmt.Printf("start %d\n", now.UnixNano())
	return r
}

// Working reports whether the run's time is not over yet.
func (r *Run) Working() bool { return time.Now().Before(r.deadline) }

// Pause sleeps for the next write interval, drawn from
// [2/3 WriteEvery, 4/3 WriteEvery]; false once the run is over.
func (r *Run) Pause() bool {
	base := int64(r.WriteEvery) * 2 / 3
	spread := int64(r.WriteEvery)*4/3 - base
	d := time.Duration(base)
	if spread > 0 {
		d += time.Duration(rand.Int63n(spread))
	}
	time.Sleep(d)
	return r.Working()
}

// Count adds map operations completed by a reader.
func (r *Run) Count(n int) { r.ops.Add(uint64(n)) }

// Done prints the end line with the operations counted.
func (r *Run) Done() { fmt.Printf("done ops %d\n", r.ops.Load()) }

// Batch is how many operations a reader does between clock checks.
const Batch = 256
