// racy-maps: the program `cargo xtask demo` audits with map-auditor.
//
// Two maps are shared between goroutines. The "inventory" map is guarded
// by a mutex: its accesses never overlap. The "sessions" map is not: some
// goroutines write it and others read it with no lock, which is a data race
// the auditor should name with both sides. The racing goroutines pause a
// millisecond or two between accesses, so that the log stays readable,
// except during a short rush three seconds in, when they do not pause at
// all and the race happens for sure. Usually the Go runtime then catches
// it too and stops the program with "fatal error: concurrent map ...";
// the auditor names the other side of that as well.
package main

import (
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"sync"
	"time"
)

// Inventory is the correctly synchronised part.
type Inventory struct {
	mu    sync.Mutex
	items map[string]int
}

func (inv *Inventory) Add(item string, n int) {
	inv.mu.Lock()
	inv.items[item] += n
	inv.mu.Unlock()
}

func (inv *Inventory) Count(item string) int {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.items[item]
}

// sessions is the deliberately unsynchronised part. It is sized up front:
// a map that grows makes each write long (buckets are moved), and the race
// would then end the program within a second.
var sessions = make(map[int]string, 4096)

func recordSession(worker, i int) {
	sessions[worker*1000+i%1000] = "user-" + strconv.Itoa(i)
}

func lookupSession(i int) bool {
	_, ok := sessions[i%4000]
	return ok
}

// rush is a short window, three seconds in, in which the racing
// goroutines do not pause at all: like a traffic spike in a real service,
// it makes the race happen for sure instead of by chance.
var rushStart = time.Now().Add(3 * time.Second)

// pause sleeps about d, give or take half. The jitter keeps the racing
// goroutines from waking on the same timer tick, which would make their
// accesses collide (and the runtime abort) far more often.
func pause(d time.Duration) {
	if now := time.Now(); now.After(rushStart) && now.Before(rushStart.Add(200*time.Millisecond)) {
		return
	}
	time.Sleep(d/2 + time.Duration(rand.Int63n(int64(d))))
}

func main() {
	fmt.Printf("racy-maps pid %d\n", os.Getpid())
	run := 10 * time.Second
	if len(os.Args) > 1 {
		if d, err := time.ParseDuration(os.Args[1]); err == nil {
			run = d
		}
	}
	deadline := time.Now().Add(run)
	inv := &Inventory{items: map[string]int{}}
	var wg sync.WaitGroup

	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			item := "part-" + strconv.Itoa(w)
			for time.Now().Before(deadline) {
				inv.Add(item, 1)
				_ = inv.Count(item)
				time.Sleep(time.Millisecond)
			}
		}(w)
	}

	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				recordSession(w, i)
				pause(2 * time.Millisecond)
			}
		}(w)
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		hits := 0
		for i := 0; time.Now().Before(deadline); i++ {
			if lookupSession(i) {
				hits++
			}
			pause(time.Millisecond)
		}
		fmt.Printf("session lookups hit %d times\n", hits)
	}()

	wg.Wait()
	fmt.Printf("inventory: %d parts counted; %d sessions recorded\n",
		inv.Count("part-0")+inv.Count("part-1")+inv.Count("part-2"), len(sessions))
}
