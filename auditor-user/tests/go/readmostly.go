// A read-mostly lookup table with an unsynchronised writer: readers look
// keys up all the time, a writer updates one every few milliseconds. The
// runtime only notices when a reader happens to enter during a write (and
// then dies with "concurrent map read and map write"); a writer entering
// while a reader is inside goes unnoticed by it.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

var table = map[int]int{}

//go:noinline
func lookup(k int) int {
	return table[k]
}

//go:noinline
func update(k, v int) {
	table[k] = v
}

func main() {
	ms := 2000
	if len(os.Args) > 1 {
		ms, _ = strconv.Atoi(os.Args[1])
	}
	for i := 0; i < 64; i++ {
		table[i] = i
	}
	stop := time.Now().Add(time.Duration(ms) * time.Millisecond)
	done := make(chan int)
	for r := 0; r < 2; r++ {
		go func(r int) {
			sum := 0
			for i := 0; time.Now().Before(stop); i++ {
				sum += lookup(i % 64)
			}
			done <- sum
		}(r)
	}
	for i := 0; time.Now().Before(stop); i++ {
		update(i%64, i)
		time.Sleep(3 * time.Millisecond)
	}
	fmt.Println("result", <-done+<-done)
}
