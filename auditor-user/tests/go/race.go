// Two goroutines write one map without a lock: the bug the auditor exists
// to name. The runtime usually kills the program with
// "fatal error: concurrent map writes".
package main

import (
	"fmt"
	"os"
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

func main() {
	if len(os.Args) > 1 && os.Args[1] == "wait" {
		time.Sleep(1500 * time.Millisecond)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	for r := 0; r < 200; r++ {
		go func() { defer wg.Done(); writerA(200000) }()
		go func() { defer wg.Done(); writerB(200000) }()
		wg.Wait()
		wg.Add(2)
	}
	fmt.Println("no crash", len(counts))
}
