// Clean: readers share a sync.RWMutex's read lock; the writer, every
// 50–100 ms, takes the write lock.
package main

import (
	"sync"

	"example.com/corpus/harness"
)

var (
	mu    sync.RWMutex
	table = map[int]int{}
)

//go:noinline
func lookup(k int) int {
	mu.RLock()
	defer mu.RUnlock()
	return table[k]
}

//go:noinline
func update(k, v int) {
	mu.Lock()
	table[k] = v
	mu.Unlock()
}

func main() {
	for i := 0; i < 256; i++ {
		table[i] = i
	}
	run := harness.Start()
	var wg sync.WaitGroup
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			s := 0
			for i := g; run.Working(); {
				for j := 0; j < harness.Batch; j++ {
					s += lookup(i % 256)
					i++
				}
				run.Count(harness.Batch)
			}
			_ = s
		}(g)
	}
	for v := 0; run.Pause(); v++ {
		update(v%256, v)
	}
	wg.Wait()
	run.Done()
}
