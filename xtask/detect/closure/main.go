// A map captured by closures: one closure checks it in a loop, and every
// 50–100 ms a new goroutine's closure marks a key in it, without a lock.
package main

import "example.com/corpus/harness"

func main() {
	seen := map[int]bool{}
	for i := 0; i < 128; i++ {
		seen[i] = i%2 == 0
	}
	run := harness.Start()
	check := func(k int) bool { return seen[k] }
	done := make(chan int)
	go func() {
		n := 0
		for i := 0; run.Working(); {
			for j := 0; j < harness.Batch; j++ {
				if check(i % 128) {
					n++
				}
				i++
			}
			run.Count(harness.Batch)
		}
		done <- n
	}()
	marked := make(chan struct{})
	for k := 0; run.Pause(); k++ {
		go func(k int) {
			seen[k%128] = true
			marked <- struct{}{}
		}(k)
		<-marked
	}
	<-done
	run.Done()
}
