// A registry whose methods take its mutex, except one maintenance path
// that forgot it: every 50–100 ms it writes while the locked paths work.
package main

import (
	"sync"

	"example.com/corpus/harness"
)

type registry struct {
	mu sync.Mutex
	m  map[int]int
}

//go:noinline
func (r *registry) add(k int) {
	r.mu.Lock()
	r.m[k]++
	r.mu.Unlock()
}

//go:noinline
func (r *registry) get(k int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[k]
}

// resetUnlocked should hold r.mu.
//
//go:noinline
func (r *registry) resetUnlocked(k int) { r.m[k] = 0 }

func main() {
	r := &registry{m: map[int]int{}}
	for i := 0; i < 128; i++ {
		r.m[i] = i
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
					if j%8 == 0 {
						r.add(i % 128)
					} else {
						s += r.get(i % 128)
					}
					i++
				}
				run.Count(harness.Batch)
			}
			_ = s
		}(g)
	}
	for k := 0; run.Pause(); k++ {
		r.resetUnlocked(k % 128)
	}
	wg.Wait()
	run.Done()
}
