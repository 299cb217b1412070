// Benchmark service: a product catalogue answering JSON, the kind of Go
// service the auditor is attached to in production. A read-mostly cache
// behind a sync.RWMutex (readers under RLock, a refresh under Lock on every
// 64th request), per-request header and query maps from net/http, a
// per-request attribute map built by the handler, and a JSON response.
//
// Usage: cacheservice [listen-address]. Prints "listening ADDR" once the
// socket accepts connections; exits on SIGTERM or SIGINT.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
)

type item struct {
	ID    int               `json:"id"`
	Name  string            `json:"name"`
	Price int               `json:"price_cents"`
	Tags  map[string]string `json:"tags"`
}

type catalogue struct {
	mu    sync.RWMutex
	items map[int]item
	hits  map[int]int
}

func newCatalogue(n int) *catalogue {
	c := &catalogue{items: make(map[int]item, n), hits: make(map[int]int)}
	for i := 0; i < n; i++ {
		c.items[i] = item{ID: i, Name: "item-" + strconv.Itoa(i), Price: 100 + i,
			Tags: map[string]string{"colour": "blue", "size": "m"}}
	}
	return c
}

//go:noinline
func (c *catalogue) lookup(id int) (item, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	it, ok := c.items[id]
	return it, ok
}

//go:noinline
func (c *catalogue) refresh(id int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	it := c.items[id]
	it.Price++
	c.items[id] = it
	c.hits[id]++
}

type server struct {
	cat      *catalogue
	requests atomic.Uint64
}

func (s *server) serveItem(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	q := r.URL.Query()
	id, err := strconv.Atoi(q.Get("id"))
	if err != nil {
		id = int(n % 1024)
	}
	id %= 1024
	if n%64 == 0 {
		s.cat.refresh(id)
	}
	it, ok := s.cat.lookup(id)
	if !ok {
		http.Error(w, "no such item", http.StatusNotFound)
		return
	}
	attrs := map[string]string{"request": strconv.FormatUint(n, 10)}
	for k, v := range it.Tags {
		attrs[k] = v
	}
	if ua := r.Header.Get("User-Agent"); ua != "" {
		attrs["client"] = ua
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "max-age=5")
	_ = json.NewEncoder(w).Encode(struct {
		Item  item              `json:"item"`
		Attrs map[string]string `json:"attrs"`
	}{it, attrs})
}

func main() {
	addr := "127.0.0.1:0"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	s := &server{cat: newCatalogue(1024)}
	mux := http.NewServeMux()
	mux.HandleFunc("/item", s.serveItem)
	srv := &http.Server{Handler: mux}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		_ = srv.Shutdown(context.Background())
	}()
	fmt.Println("listening", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
	fmt.Println("served", s.requests.Load())
}
