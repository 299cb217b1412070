// The soak target: a service-like mix of map work. Long-lived maps under a
// mutex, per-request maps created and dropped, iteration and deletes, at a
// bounded rate (argument: operations per second, spread over 4 workers),
// running until killed.
package main

import (
	"os"
	"strconv"
	"sync"
	"time"
)

var (
	mu      sync.Mutex
	session = map[string]int{}
	counts  = map[int]int{}
)

//go:noinline
func request(i int) int {
	headers := map[string]string{"a": "1", "b": strconv.Itoa(i)}
	mu.Lock()
	session[headers["b"]] = i
	counts[i%512]++
	if len(session) > 2048 {
		for k := range session {
			delete(session, k)
			break
		}
	}
	n := counts[(i+1)%512]
	mu.Unlock()
	return n + len(headers)
}

func main() {
	rate, _ := strconv.Atoi(os.Args[1])
	per := rate / 4
	if per < 1 {
		per = 1
	}
	for w := 0; w < 4; w++ {
		go func(w int) {
			tick := time.NewTicker(100 * time.Millisecond)
			for i := w; ; {
				<-tick.C
				for j := 0; j < per/10+1; j++ {
					request(i)
					i += 4
				}
			}
		}(w)
	}
	select {}
}
