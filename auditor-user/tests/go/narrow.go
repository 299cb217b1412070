// A target for the overhead budget's scope step: a hot loop ranges over a
// map through reflect (a call site outside the main module, probed under
// the default user scope), while the program's own code touches a map of
// its own now and then. Once the file named by the first argument exists
// (the test creates it after the auditor reports its scope narrowed), two
// goroutines of the main module write one map without a lock: the race
// the auditor must still name.
//
//	narrow widen FILE   the reflect loop stops once FILE exists (its call
//	                    site goes cold while detached); the program's own
//	                    loop goes on until FILE.done exists.
package main

import (
	"fmt"
	"os"
	"reflect"
	"sync"
	"time"
)

var counts = map[int]int{}

//go:noinline
func writerA(n int) {
	for i := 0; i < n; i++ {
		counts[i%64]++
	}
}

//go:noinline
func writerB(n int) {
	for i := 0; i < n; i++ {
		counts[i%64] += 2
	}
}

//go:noinline
func rangeByReflect(stop <-chan struct{}) {
	m := map[string]int{"a": 1, "b": 2, "c": 3}
	v := reflect.ValueOf(m)
	n := 0
	for {
		select {
		case <-stop:
			fmt.Println("ranged", n)
			return
		default:
		}
		for i := 0; i < 1000; i++ {
			it := v.MapRange()
			for it.Next() {
				n++
			}
		}
	}
}

// Touch a map of the program's own, and work, every ~10 ms until file
// exists.
func ownLoopUntil(own map[int]int, file string) {
	deadline := time.Now().Add(120 * time.Second)
	for i := 0; ; i++ {
		if _, err := os.Stat(file); err == nil {
			return
		}
		if time.Now().After(deadline) {
			fmt.Println("never told to go on")
			os.Exit(3)
		}
		own[i%8]++
		work()
		time.Sleep(10 * time.Millisecond)
	}
}

var sink uint64

// A few milliseconds of work without maps: the target's CPU time is
// then its own, so the probes on its map stay far under any budget.
//
//go:noinline
func work() {
	x := sink
	for j := 0; j < 3_000_000; j++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	sink = x
}

func main() {
	stop := make(chan struct{})
	go rangeByReflect(stop)
	own := map[int]int{}
	if os.Args[1] == "widen" {
		ownLoopUntil(own, os.Args[2])
		close(stop)
		ownLoopUntil(own, os.Args[2]+".done")
		fmt.Println("done", len(own))
		return
	}
	ownLoopUntil(own, os.Args[1])
	var wg sync.WaitGroup
	for r := 0; r < 200; r++ {
		wg.Add(2)
		go func() { defer wg.Done(); writerA(200000) }()
		go func() { defer wg.Done(); writerB(200000) }()
		wg.Wait()
	}
	close(stop)
	fmt.Println("no crash", len(counts), len(own))
}
