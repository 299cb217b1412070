// Package-level maps, one of them raced by two writers until the runtime
// kills the program with "fatal error: concurrent map writes". The raced
// map is not the first variable, and a named map type sits beside it, so a
// name taken from the wrong variable shows. The process dies microseconds
// after the race is found: the name must be read while it lives.
package main

import (
	"bufio"
	"fmt"
	"os"
	"sync"
	"time"
)

// Registry is a named map type: still a map to the auditor.
type Registry map[string]int

var (
	users    = map[string]int{"root": 0}
	plugins  = Registry{"core": 1}
	sessions = map[int]int{}
	limits   = map[string]float64{"cpu": 1}
	hits     int
)

//go:noinline
func login(n int) {
	for i := 0; i < n; i++ {
		sessions[i%128] = i
	}
}

//go:noinline
func logout(n int) {
	for i := 0; i < n; i++ {
		delete(sessions, i%128)
		sessions[i%64]++
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "wait" {
		// Race only once told to (a line on stdin).
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	hits = len(users) + len(plugins) + len(limits)
	// A race the auditor slows down still ends the program: the runtime
	// catches it long before this deadline.
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); login(100000) }()
		go func() { defer wg.Done(); logout(100000) }()
		wg.Wait()
	}
	fmt.Println("no crash", hits, len(sessions))
	os.Exit(0)
}
