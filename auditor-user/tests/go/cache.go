// A read-mostly cache behind an RWMutex, read by a method whose map call
// returns onto value copies and the deferred RUnlock (an indirect call):
// no instruction after the call that the kernel emulates can stand in for
// the return address, so an exit probe there is single-stepped.
//
//	cache steady MS   readers at full rate, a writer refreshing under the
//	                  lock every 2 ms; prints "reads N" at the end
//	cache silent MS   the same, and from "racing" on a second writer that
//	                  skips the lock: it writes while a slow reader is
//	                  hashing a 64 MiB key inside the map call (the other
//	                  readers hold off meanwhile), so the runtime, which
//	                  checks at entry only, never notices
//
// Both run until MS milliseconds have passed (0: until killed).
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type key struct {
	name string
	n    int
}

type item struct {
	id, price, stock int
	tag              string
}

type cache struct {
	mu    sync.RWMutex
	items map[key]item
}

//go:noinline
func (c *cache) lookup(k key) (item, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	it, ok := c.items[k]
	return it, ok
}

//go:noinline
func (c *cache) refresh(k key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	it := c.items[k]
	it.price++
	c.items[k] = it
}

// The bug: a write without the lock.
//
//go:noinline
func (c *cache) restock(k key, n int) {
	c.items[k] = item{id: k.n, stock: n, tag: "t"}
}

func main() {
	mode := os.Args[1]
	ms, _ := strconv.Atoi(os.Args[2])
	c := &cache{items: map[key]item{}}
	for i := 0; i < 64; i++ {
		c.items[key{"k", i}] = item{id: i, tag: "t"}
	}
	big := key{strings.Repeat("x", 64<<20), 0}
	var stop atomic.Bool
	if ms > 0 {
		time.AfterFunc(time.Duration(ms)*time.Millisecond, func() { stop.Store(true) })
	}
	var reads atomic.Int64
	// 0: idle, 1: the slow reader is about to look the big key up (the
	// other readers hold off), 2: the racing write is done.
	var inside atomic.Int32
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := 0; !stop.Load(); i++ {
				if inside.Load() != 0 {
					runtime.Gosched()
					continue
				}
				if _, ok := c.lookup(key{"k", i % 64}); ok {
					n++
				}
			}
			reads.Add(int64(n))
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			c.refresh(key{"k", i % 64})
			time.Sleep(2 * time.Millisecond)
		}
	}()
	if mode == "silent" {
		slowReader := func() {
			defer wg.Done()
			for !stop.Load() {
				inside.Store(1)
				c.lookup(big)
				for inside.Load() == 1 && !stop.Load() {
					runtime.Gosched()
				}
				inside.Store(0)
				time.Sleep(5 * time.Millisecond)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Let the site be escalated and its first window pass.
			time.Sleep(1500 * time.Millisecond)
			fmt.Println("racing")
			wg.Add(1)
			go slowReader()
			for !stop.Load() {
				if inside.Load() != 1 {
					runtime.Gosched()
					continue
				}
				// The reader is hashing the big key by now (milliseconds),
				// holding the read lock: the locked writer waits for it.
				t := time.Now()
				for time.Since(t) < 200*time.Microsecond {
				}
				c.restock(key{"k", 1}, int(t.UnixNano()))
				inside.Store(2)
			}
		}()
	}
	wg.Wait()
	fmt.Println("reads", reads.Load())
}
