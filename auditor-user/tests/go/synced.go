// Programs that share maps correctly. The auditor must report no overlap
// for any of them. The first argument picks the pattern.
package main

import (
	"fmt"
	"os"
	"sync"
	"time"
)

const workers = 4
const rounds = 20000

func withMutex() int {
	var mu sync.Mutex
	m := map[int]int{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				mu.Lock()
				m[i%128] += w
				_ = m[(i+1)%128]
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	return len(m)
}

func withRWMutex() int {
	var mu sync.RWMutex
	m := map[int]int{}
	for i := 0; i < 128; i++ {
		m[i] = i
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := 0
			for i := 0; i < rounds; i++ {
				mu.RLock()
				s += m[i%128]
				mu.RUnlock()
			}
			_ = s
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < rounds/10; i++ {
			mu.Lock()
			m[i%128] = i
			mu.Unlock()
		}
	}()
	wg.Wait()
	return len(m)
}

type shard struct {
	mu sync.Mutex
	m  map[int]int
}

func withShards() int {
	shards := make([]*shard, 8)
	for i := range shards {
		shards[i] = &shard{m: map[int]int{}}
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				s := shards[(i+w)%8]
				s.mu.Lock()
				s.m[i%64]++
				s.mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	n := 0
	for _, s := range shards {
		n += len(s.m)
	}
	return n
}

func withSyncMap() int {
	var m sync.Map
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				m.Store(i%128, w)
				m.Load((i + 1) % 128)
			}
		}(w)
	}
	wg.Wait()
	n := 0
	m.Range(func(_, _ any) bool { n++; return true })
	return n
}

func withOwner() int {
	type msg struct{ k, v int }
	in := make(chan msg, 64)
	out := make(chan int)
	go func() {
		m := map[int]int{}
		for x := range in {
			m[x.k] += x.v
		}
		out <- len(m)
	}()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				in <- msg{i % 128, w}
			}
		}(w)
	}
	wg.Wait()
	close(in)
	return <-out
}

func main() {
	if len(os.Args) > 2 && os.Args[2] == "wait" {
		time.Sleep(1500 * time.Millisecond)
	}
	var n int
	switch os.Args[1] {
	case "mutex":
		n = withMutex()
	case "rwmutex":
		n = withRWMutex()
	case "shards":
		n = withShards()
	case "syncmap":
		n = withSyncMap()
	case "owner":
		n = withOwner()
	default:
		fmt.Fprintln(os.Stderr, "unknown pattern")
		os.Exit(2)
	}
	fmt.Println("result", n)
}
