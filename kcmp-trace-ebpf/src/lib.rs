#![no_std]
// The programs are the binary targets (`kcmp-trace-probes` for tracing,
// `kcmp-trace-bench-probes` for the bench); this library only lets kcmp-trace list the crate
// as a build dependency so cargo rebuilds the programs when they change.
