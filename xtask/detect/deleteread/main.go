// Readers look keys up while an expiry loop deletes a key and puts it
// back every 50–100 ms, without a lock.
package main

import "example.com/corpus/harness"

var cache = map[int]string{}

//go:noinline
func lookup(k int) bool {
	_, ok := cache[k]
	return ok
}

//go:noinline
func expire(k int) { delete(cache, k) }

//go:noinline
func refill(k int) { cache[k] = "value" }

func main() {
	for i := 0; i < 256; i++ {
		cache[i] = "value"
	}
	run := harness.Start()
	done := make(chan int)
	for g := 0; g < 2; g++ {
		go func(g int) {
			hits := 0
			for i := g; run.Working(); {
				for j := 0; j < harness.Batch; j++ {
					if lookup(i % 256) {
						hits++
					}
					i++
				}
				run.Count(harness.Batch)
			}
			done <- hits
		}(g)
	}
	for k := 0; run.Pause(); k++ {
		expire(k % 256)
		refill(k % 256)
	}
	<-done
	<-done
	run.Done()
}
