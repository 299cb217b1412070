// Targets for tests/default_scope.rs: what the default scope (the
// program's own code, reflect and maps) probes and what it leaves alone.
//
//	scope stdlib   parses query strings (net/url fills its own map) and
//	               counts words in a map of its own; prints "done N".
//	scope json     one goroutine writes a map while another encodes it
//	               with encoding/json (reflect iterates it); ends when
//	               the runtime kills it or after the rounds.
package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"sync/atomic"
)

var shared = map[string]int{}

//go:noinline
func countWords(words []string) map[string]int {
	m := map[string]int{}
	for _, w := range words {
		m[w]++
	}
	return m
}

//go:noinline
func writer(stop *atomic.Bool) {
	for i := 0; !stop.Load(); i++ {
		shared[fmt.Sprint(i%64)] = i
	}
}

//go:noinline
func encode() int {
	b, _ := json.Marshal(shared)
	return len(b)
}

func main() {
	switch os.Args[1] {
	case "stdlib":
		n := 0
		for i := 0; i < 200; i++ {
			v, _ := url.ParseQuery("a=1&b=2&c=3")
			n += len(v)
			n += len(countWords([]string{"x", "y", "x"}))
		}
		fmt.Println("done", n)
	case "json":
		for i := 0; i < 64; i++ {
			shared[fmt.Sprint(i)] = i
		}
		var stop atomic.Bool
		go writer(&stop)
		n := 0
		for i := 0; i < 20000; i++ {
			n += encode()
		}
		stop.Store(true)
		fmt.Println("done", n)
	}
}
