// Readers look keys up while a reset loop clears the whole map and fills
// it again every 50–100 ms, without a lock.
package main

import "example.com/corpus/harness"

var cache = map[int]int{}

//go:noinline
func lookup(k int) int { return cache[k] }

//go:noinline
func refill(n int) {
	for i := 0; i < n; i++ {
		cache[i] = i
	}
}

func main() {
	refill(64)
	run := harness.Start()
	done := make(chan int)
	for g := 0; g < 2; g++ {
		go func(g int) {
			s := 0
			for i := g; run.Working(); {
				for j := 0; j < harness.Batch; j++ {
					s += lookup(i % 64)
					i++
				}
				run.Count(harness.Batch)
			}
			done <- s
		}(g)
	}
	for run.Pause() {
		reset()
		refill(64)
	}
	<-done
	<-done
	run.Done()
}
