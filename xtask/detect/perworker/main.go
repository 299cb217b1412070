// Clean: each worker counts into its own map; the results are merged
// after every worker has finished. Every 50–100 ms another worker starts.
package main

import (
	"sync"

	"example.com/corpus/harness"
)

//go:noinline
func work(counts map[int]int, i int) { counts[i%97]++ }

//go:noinline
func merge(into, from map[int]int) {
	for k, v := range from {
		into[k] += v
	}
}

func main() {
	run := harness.Start()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var results []map[int]int
	worker := func(g int) {
		defer wg.Done()
		counts := map[int]int{}
		for i := g; run.Working(); {
			for j := 0; j < harness.Batch; j++ {
				work(counts, i)
				i++
			}
			run.Count(harness.Batch)
		}
		mu.Lock()
		results = append(results, counts)
		mu.Unlock()
	}
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go worker(g)
	}
	for g := 2; run.Pause() && g < 64; g++ {
		wg.Add(1)
		go worker(g)
	}
	wg.Wait()
	total := map[int]int{}
	for _, r := range results {
		merge(total, r)
	}
	run.Done()
}
