#![no_std]
// The programs are the `kcmp-trace-probes` binary target; this library only lets kcmp-trace list
// the crate as a build dependency so cargo rebuilds the programs when they change.
