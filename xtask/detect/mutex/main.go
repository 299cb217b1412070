// Clean: every access to the map holds one sync.Mutex.
package main

import (
	"sync"

	"example.com/corpus/harness"
)

var (
	mu     sync.Mutex
	counts = map[int]int{}
)

//go:noinline
func get(k int) int {
	mu.Lock()
	defer mu.Unlock()
	return counts[k]
}

//go:noinline
func bump(k int) {
	mu.Lock()
	counts[k]++
	mu.Unlock()
}

func main() {
	run := harness.Start()
	var wg sync.WaitGroup
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			s := 0
			for i := g; run.Working(); {
				for j := 0; j < harness.Batch; j++ {
					if j%4 == 0 {
						bump(i % 128)
					} else {
						s += get(i % 128)
					}
					i++
				}
				run.Count(harness.Batch)
			}
			_ = s
		}(g)
	}
	for k := 0; run.Pause(); k++ {
		bump(k % 128)
	}
	wg.Wait()
	run.Done()
}
