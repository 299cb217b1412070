// Map operations under heavy GC and goroutine stack growth, fully probed:
// the program must finish with the right answer.
package main

import (
	"fmt"
	"runtime"
	"sync"
)

//go:noinline
func deep(m map[int]int, depth int, pad [64]byte) int {
	if depth == 0 {
		m[len(m)] = int(pad[0])
		return m[len(m)-1] + 1
	}
	pad[depth%64]++
	return deep(m, depth-1, pad) + 1
}

func main() {
	var wg sync.WaitGroup
	results := make([]int, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			m := map[int]int{}
			total := 0
			for i := 0; i < 2000; i++ {
				total += deep(m, 50+i%200, [64]byte{})
				_ = make([]byte, 1<<16)
				if i%50 == 0 {
					runtime.GC()
				}
				for k := range m {
					if k%3 == 0 {
						delete(m, k)
					}
				}
			}
			results[g] = total + len(m)
		}(g)
	}
	wg.Wait()
	sum := 0
	for _, r := range results {
		sum += r
	}
	fmt.Println("checksum", sum)
}
