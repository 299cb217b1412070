//! Tracepoints on bpf(2): who touched which BPF map.
