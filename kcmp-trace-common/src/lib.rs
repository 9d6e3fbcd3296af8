//! Types and pure logic shared by kcmp-trace's eBPF programs and its userspace.
//!
//! Everything here but [`json`] is `no_std` and allocation-free so the eBPF side can use
//! it; the layouts of `#[repr(C)]` types are the contract between the two sides. [`json`]
//! (feature `json`, userspace only) is the JSON that consumers parse.
#![cfg_attr(not(feature = "json"), no_std)]

pub mod arch;
pub mod classify;
pub mod event;
pub mod hist;
#[cfg(feature = "json")]
pub mod json;
pub mod kcmp;
pub mod maps;
pub mod outcome;
pub mod programs;
pub mod reader;
pub mod result;
pub mod snapshot;
pub mod stacks;

#[cfg(feature = "user")]
mod pod {
    // These types are `#[repr(C)]`, `Copy`, only integers and byte arrays, with no padding
    // the kernel could leave uninitialised in a way that matters to readers.
    // SAFETY: as said above.
    unsafe impl aya::Pod for crate::event::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::ProcessTotals {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::StageFill {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::snapshot::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::reader::CallerCounts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::stacks::StackKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::stacks::StackCounts {}
}
