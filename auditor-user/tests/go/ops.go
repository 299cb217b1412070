// Exercises every kind of map operation from known goroutines and prints
// what it did, so tests can compare the auditor's view with the truth.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

func goid() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	buf = bytes.TrimPrefix(buf, []byte("goroutine "))
	buf = buf[:bytes.IndexByte(buf, ' ')]
	id, _ := strconv.ParseUint(string(buf), 10, 64)
	return id
}

type point struct{ x, y int64 }

var sink int

// registry is a package-level map: the auditor names it by this variable.
var registry = map[string]int{}

//go:noinline
func writeInts(m map[int64]int64, n int) {
	for i := 0; i < n; i++ {
		m[int64(i)] = int64(i)
	}
}

//go:noinline
func writeStrings(m map[string]int, n int) {
	for i := 0; i < n; i++ {
		m["k"+strconv.Itoa(i)] = i
	}
}

//go:noinline
func readInts(m map[int64]int64, n int) {
	for i := 0; i < n; i++ {
		sink += int(m[int64(i)])
	}
}

//go:noinline
func deleteInts(m map[int64]int64, n int) {
	for i := 0; i < n; i++ {
		delete(m, int64(i))
	}
}

//go:noinline
func iterate(m map[string]int) {
	for _, v := range m {
		sink += v
	}
}

//go:noinline
func writePoints(m map[point]string) {
	m[point{1, 2}] = "a"
	if _, ok := m[point{1, 2}]; ok {
		sink++
	}
}

//go:noinline
func clearAll(m map[string]int) {
	for k := range m {
		delete(m, k)
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "wait" {
		// Attach mode: work only once the test has seen the auditor's
		// attach report and says go (a line on stdin), however long
		// attaching takes on a busy machine.
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	ints := make(map[int64]int64)
	strs := make(map[string]int, 100)
	points := make(map[point]string)
	fmt.Printf("main goid %d\n", goid())
	writeInts(ints, 10)
	readInts(ints, 10)
	writeStrings(strs, 10)
	iterate(strs)
	writePoints(points)
	for i := 0; i < 3; i++ {
		time.Sleep(30 * time.Millisecond)
		registry["k"+strconv.Itoa(i)] = i
	}
	done := make(chan uint64)
	go func() {
		writeInts(ints, 5)
		deleteInts(ints, 10)
		done <- goid()
	}()
	fmt.Printf("worker goid %d\n", <-done)
	clearAll(strs)
	fmt.Printf("result %d %d %d\n", len(ints), len(strs), len(points)+len(registry)-3)
}
