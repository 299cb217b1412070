// Clean: sync.Once builds a map, after which it is only read; every
// 50–100 ms another goroutine joins the readers.
package main

import (
	"strconv"
	"sync"

	"example.com/corpus/harness"
)

var (
	once     sync.Once
	settings map[string]int
)

func config() map[string]int {
	once.Do(func() {
		settings = map[string]int{}
		for i := 0; i < 128; i++ {
			settings["key-"+strconv.Itoa(i)] = i
		}
	})
	return settings
}

//go:noinline
func setting(k string) int { return config()[k] }

func main() {
	keys := make([]string, 128)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	run := harness.Start()
	var wg sync.WaitGroup
	reader := func(g int) {
		defer wg.Done()
		s := 0
		for i := g; run.Working(); {
			for j := 0; j < harness.Batch; j++ {
				s += setting(keys[i%len(keys)])
				i++
			}
			run.Count(harness.Batch)
		}
		_ = s
	}
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go reader(g)
	}
	for g := 2; run.Pause() && g < 64; g++ {
		wg.Add(1)
		go reader(g)
	}
	wg.Wait()
	run.Done()
}
