// A target for the auditor's process behaviour: pipes, signals, deadlines
// and shared output. Every mode that must be attached to first waits for a
// line on stdin, so tests synchronise on the attach report, not on time.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

var table = map[int]int{}

//go:noinline
func touch(i int) {
	table[i%512] = i
	_ = table[(i+7)%512]
}

var stdin = bufio.NewReader(os.Stdin)

func waitForGo() {
	stdin.ReadString('\n')
}

func main() {
	mode := "busy"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "busy":
		// Map work until stdin says stop (or for a minute); "paced" keeps
		// it to a few thousand accesses a second.
		paced := len(os.Args) > 2 && os.Args[2] == "paced"
		waitForGo()
		stop := make(chan struct{})
		go func() { waitForGo(); close(stop) }()
		deadline := time.Now().Add(time.Minute)
		for i := 0; time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				fmt.Println("stopped")
				return
			default:
			}
			touch(i)
			if paced && i%20 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	case "stderr-bytes":
		// Bytes that are not UTF-8, on stderr, then map work and exit 0.
		os.Stderr.Write([]byte{0xff, 0xfe, 'x', '\n', 0xc3, 0x28, '\n'})
		for i := 0; i < 1000; i++ {
			touch(i)
		}
		os.Stderr.Write([]byte{0x80, 0x81, '\n'})
		fmt.Println("done")
	case "outlive":
		// Keeps writing to stderr for a while after the auditor's --duration;
		// leaves its exit in the file named by argument 2.
		end := time.Now().Add(3 * time.Second)
		for i := 0; time.Now().Before(end); i++ {
			touch(i)
			if i%1000 == 0 {
				fmt.Fprintf(os.Stderr, "tick %d\n", i)
				fmt.Printf("tick %d\n", i)
				time.Sleep(20 * time.Millisecond)
			}
		}
		os.WriteFile(os.Args[2], []byte("finished\n"), 0o644)
	case "term":
		// Exits 3 on SIGTERM, after saying so.
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		fmt.Println("ready")
		for i := 0; ; i++ {
			select {
			case <-ch:
				fmt.Println("got SIGTERM")
				os.Exit(3)
			default:
			}
			touch(i)
			if i%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	case "chatty":
		// Many stdout lines of its own while the auditor writes its log.
		n := 20000
		if len(os.Args) > 2 {
			n, _ = strconv.Atoi(os.Args[2])
		}
		// One write(2) per line, as an unbuffered os.Stdout does.
		for i := 0; i < n; i++ {
			touch(i)
			fmt.Printf("target line %d with some padding %d\n", i, i)
		}
	}
}
