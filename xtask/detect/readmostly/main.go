// A lookup table read constantly by two goroutines and updated every
// 50–100 ms by a third without any lock. The runtime rarely catches it: a
// reader is usually inside when the writer enters, and readers do not set
// the writing marker.
package main

import (
	"strconv"

	"example.com/corpus/harness"
)

var table = map[string]int{}
var keys []string

//go:noinline
func lookup(k string) int { return table[k] }

//go:noinline
func update(k string, v int) { table[k] = v }

func main() {
	for i := 0; i < 256; i++ {
		keys = append(keys, "route-"+strconv.Itoa(i))
		table[keys[i]] = i
	}
	run := harness.Start()
	done := make(chan int)
	for g := 0; g < 2; g++ {
		go func(g int) {
			s := 0
			for i := g; run.Working(); {
				for j := 0; j < harness.Batch; j++ {
					s += lookup(keys[i%len(keys)])
					i++
				}
				run.Count(harness.Batch)
			}
			done <- s
		}(g)
	}
	for v := 0; run.Pause(); v++ {
		update(keys[v%len(keys)], v)
	}
	<-done
	<-done
	run.Done()
}
