// A goroutine sums a map by iterating it over and over while another
// updates it every 50–100 ms without a lock.
package main

import "example.com/corpus/harness"

var sessions = map[int]int{}

//go:noinline
func total() (sum, n int) {
	for _, v := range sessions {
		sum += v
		n++
	}
	return sum, n
}

//go:noinline
func touch(k int) { sessions[k]++ }

func main() {
	for i := 0; i < 64; i++ {
		sessions[i] = i
	}
	run := harness.Start()
	done := make(chan int)
	go func() {
		s := 0
		for run.Working() {
			sum, n := total()
			s += sum
			run.Count(n)
		}
		done <- s
	}()
	for k := 0; run.Pause(); k++ {
		touch(k % 64)
	}
	<-done
	run.Done()
}
