// Benchmark target: a tight loop of map writes and reads on one goroutine,
// then the same on four goroutines each with its own map. Prints its own
// timing and peak memory so the harness can compare runs side by side.
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

var sink int64

//go:noinline
func loop(m map[int64]int64, n int) int64 {
	var s int64
	for i := 0; i < n; i++ {
		m[int64(i&1023)] = int64(i)
		s += m[int64((i+7)&1023)]
	}
	return s
}

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	start := time.Now()
	sink += loop(make(map[int64]int64, 1024), n)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := loop(make(map[int64]int64, 1024), n/4)
			_ = s
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	// Two map operations per iteration, n iterations twice over.
	fmt.Printf("ns_per_op %.2f maxrss_kib %d\n", float64(elapsed.Nanoseconds())/float64(4*n), ru.Maxrss)
}
