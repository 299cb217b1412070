// Clean: maps handed from goroutine to goroutine over channels. A
// producer fills a map and sends it; the consumer reads and changes it
// and sends it back; only the holder touches it. Every 50–100 ms the
// producer starts over with a new map.
package main

import "example.com/corpus/harness"

//go:noinline
func fill(m map[int]int, base int) {
	for i := 0; i < 64; i++ {
		m[i] = base + i
	}
}

//go:noinline
func consume(m map[int]int) int {
	s := 0
	for i := 0; i < 64; i++ {
		s += m[i]
		m[i] = s
	}
	return s
}

func main() {
	run := harness.Start()
	toConsumer := make(chan map[int]int)
	toProducer := make(chan map[int]int)
	go func() {
		for m := range toConsumer {
			consume(m)
			run.Count(128)
			toProducer <- m
		}
		close(toProducer)
	}()
	renew := make(chan struct{}, 1)
	go func() {
		for run.Pause() {
			select {
			case renew <- struct{}{}:
			default:
			}
		}
	}()
	m := map[int]int{}
	for base := 0; run.Working(); base++ {
		select {
		case <-renew:
			m = map[int]int{}
		default:
		}
		fill(m, base)
		run.Count(64)
		toConsumer <- m
		m = <-toProducer
	}
	close(toConsumer)
	for range toProducer {
	}
	run.Done()
}
