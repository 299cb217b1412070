// Clean: copy-on-write behind an atomic.Pointer. Readers load the current
// map and only read it; every 50–100 ms the writer copies it, changes the
// copy and publishes the copy.
package main

import (
	"sync"
	"sync/atomic"

	"example.com/corpus/harness"
)

var current atomic.Pointer[map[int]int]

//go:noinline
func lookup(k int) int { return (*current.Load())[k] }

//go:noinline
func publish(k, v int) {
	old := *current.Load()
	next := make(map[int]int, len(old)+1)
	for key, val := range old {
		next[key] = val
	}
	next[k] = v
	current.Store(&next)
}

func main() {
	first := map[int]int{}
	for i := 0; i < 128; i++ {
		first[i] = i
	}
	current.Store(&first)
	run := harness.Start()
	var wg sync.WaitGroup
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			s := 0
			for i := g; run.Working(); {
				for j := 0; j < harness.Batch; j++ {
					s += lookup(i % 128)
					i++
				}
				run.Count(harness.Batch)
			}
			_ = s
		}(g)
	}
	for v := 0; run.Pause(); v++ {
		publish(v%128, v)
	}
	wg.Wait()
	run.Done()
}
