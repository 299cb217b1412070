// Races built so that one detection path in particular reports each; see
// tests/detection_paths.rs. The first argument picks the race; with a
// second argument "wait" the program reads one line from stdin before
// racing (so a test can attach first), then prints "racing".
//
// The keys are 8 MiB arrays: hashing one takes hundreds of microseconds
// before the runtime sets its writing marker, and inserting one (the key is
// stored out of line: allocated and copied) or comparing it keeps the
// marker set about as long.
// That turns windows of nanoseconds into windows the probes do not miss.
// The two sides of each race run on goroutines that spin on atomics from
// round to round, so neither waits to be woken while the other races.
package main

import (
	"bufio"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

type bigKey [8 << 20]byte

var (
	keyA, keyB, keyProbe bigKey
	byKey                map[bigKey]int
	// Interface keys: a boxed 8 MiB array is slow to hash and compare, an
	// int is quick, in the same map.
	byAny   map[any]int
	slowKey any
	sink    int
)

func init() {
	keyA[0], keyB[0], keyProbe[0] = 'a', 'b', 'p'
	slowKey = keyA
}

// readEmpty reads a map that is still empty: the runtime returns before it
// checks the writing marker.
//
//go:noinline
func readEmpty() int { return byKey[keyProbe] }

//go:noinline
func insertBig() { byKey[keyA] = 1 }

//go:noinline
func writeA() { byKey[keyA] = 1 }

//go:noinline
func writeB() { byKey[keyB] = 2 }

// slowRead spends hundreds of microseconds hashing and comparing its key,
// after the runtime's marker check at its start.
//
//go:noinline
func slowRead() int { return byAny[slowKey] }

//go:noinline
func writeSmall(i int) { byAny[i%16] = i }

// partner is a goroutine that runs one step per round when told to.
type partner struct{ round, done atomic.Int64 }

func (p *partner) serve(rounds int, step func(r int64)) {
	go func() {
		for r := int64(1); r <= int64(rounds); r++ {
			for p.round.Load() < r {
			}
			step(r)
			p.done.Store(r)
		}
	}()
}

func (p *partner) wait(r int64) {
	for p.done.Load() < r {
	}
}

// marker: a writer holds the marker (inserting a big key into an empty
// map) while a reader keeps entering. The reader's entry sees the marker;
// the runtime does not check it, because the map is still empty. (Only
// in the few nanoseconds between the insert's count increment and its
// clearing of the marker could a reader's check see both; unprobed
// readers, thousands of times faster, do hit that now and then.)
func marker(rounds int) {
	var reader partner
	var reading, stop atomic.Int64
	reader.serve(rounds, func(r int64) {
		for stop.Load() < r {
			sink += readEmpty()
			reading.Store(r)
		}
	})
	for r := int64(1); r <= int64(rounds); r++ {
		byKey = make(map[bigKey]int)
		reader.round.Store(r)
		for reading.Load() < r {
		}
		insertBig()
		stop.Store(r)
		reader.wait(r)
	}
	fmt.Println("marker rounds", rounds)
}

// fatal: two writers of existing keys pass the runtime's entry check while
// neither has set the marker yet (both are hashing), then both flip it
// while the other compares its key; the runtime kills the program at the
// end of a write. No entry saw the marker set. A partner that notices the
// round late (its thread was descheduled) could enter during the other's
// write, where entry does see the marker: it sits that round out.
func fatal(rounds int) {
	var other partner
	var opened atomic.Int64
	other.serve(rounds, func(int64) {
		if time.Now().UnixNano()-opened.Load() < int64(20*time.Microsecond) {
			writeA()
		}
	})
	byKey = map[bigKey]int{keyA: 0, keyB: 0}
	for r := int64(1); r <= int64(rounds); r++ {
		opened.Store(time.Now().UnixNano())
		other.round.Store(r)
		writeB()
		other.wait(r)
	}
	fmt.Println("fatal survived", rounds)
}

// interval: a writer enters while a reader is inside (hashing its key).
// Readers do not set the marker, so neither entry mode nor the runtime can
// see it; only exit probes know the reader is still inside. The writer
// gives the reader a head start so it is inside, not about to enter.
func interval(rounds int) {
	byAny = map[any]int{slowKey: 1}
	var writer partner
	writer.serve(rounds, func(r int64) {
		for t := time.Now(); time.Since(t) < 20*time.Microsecond; {
		}
		writeSmall(int(r))
	})
	for r := int64(1); r <= int64(rounds); r++ {
		writer.round.Store(r)
		sink += slowRead()
		writer.wait(r)
	}
	fmt.Println("interval rounds", rounds)
}

func main() {
	if len(os.Args) > 2 && os.Args[2] == "wait" {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		fmt.Println("racing")
	}
	switch os.Args[1] {
	case "marker":
		marker(20)
	case "fatal":
		fatal(2000)
	case "interval":
		interval(500)
	default:
		fmt.Fprintln(os.Stderr, "usage: paths marker|fatal|interval [wait]")
		os.Exit(2)
	}
}
