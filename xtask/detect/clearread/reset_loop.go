//go:build !go1.21

package main

// Before Go 1.21 the compiler turns this loop into the runtime's map clear.
//
//go:noinline
func reset() {
	for k := range cache {
		delete(cache, k)
	}
}
