//go:build go1.21

package main

//go:noinline
func reset() { clear(cache) }
