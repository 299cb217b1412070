// An HTTP service with a response cache and no lock: handlers (one
// goroutine per connection) read it, fill it on a miss, and an
// invalidation loop drops an entry every 50–100 ms, so the next request
// for it writes. Four client goroutines load the service over keep-alive
// connections.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"

	"example.com/corpus/harness"
)

var cache = map[string][]byte{}

//go:noinline
func cached(k string) ([]byte, bool) {
	v, ok := cache[k]
	return v, ok
}

//go:noinline
func store(k string, v []byte) { cache[k] = v }

//go:noinline
func invalidate(k string) { delete(cache, k) }

func serve(w http.ResponseWriter, r *http.Request) {
	k := r.URL.Query().Get("k")
	v, ok := cached(k)
	if !ok {
		v = []byte(`{"item":"` + k + `"}`)
		store(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(v)
}

func main() {
	for i := 0; i < 64; i++ {
		k := strconv.Itoa(i)
		cache[k] = []byte(`{"item":"` + k + `"}`)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/item", serve)
	go func() { _ = http.Serve(ln, mux) }()
	url := fmt.Sprintf("http://%s/item?k=", ln.Addr())

	run := harness.Start()
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			for i := c; run.Working(); i++ {
				resp, err := client.Get(url + strconv.Itoa(i%64))
				if err != nil {
					panic(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				run.Count(1)
			}
		}(c)
	}
	for k := 0; run.Pause(); k++ {
		invalidate(strconv.Itoa(k % 64))
	}
	wg.Wait()
	run.Done()
}
