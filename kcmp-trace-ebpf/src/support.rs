//! What every object of this crate carries besides its hooks: programs userspace runs or
//! loads on their own, never attached, and what the kernel asks of any object.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use kcmp_trace_common::{named_as, programs};

use crate::calls::events;

named_as!(flush_events, programs::FLUSH_EVENTS);
named_as!(comm_read, programs::COMM_READ);

/// Sends the events this CPU staged (`events::flush_stage`). Never attached: userspace runs
/// it on a CPU with BPF_PROG_TEST_RUN, and reads what it did from its return value, which
/// aya's `raw_tracepoint` macro would discard.
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp")]
pub fn flush_events(_ctx: *mut core::ffi::c_void) -> u32 {
    events::flush_stage()
}

/// The caller's comm read as events read it (from task_struct at COMM_OFFSET, where the
/// loader set one), into the stack. Never attached: the loader loads it alone to ask the
/// verifier whether the direct read passes, and the bench's cost ladder times it.
#[tracepoint]
pub fn comm_read(_ctx: TracePointContext) -> u32 {
    let mut comm = core::mem::MaybeUninit::<[u64; 2]>::uninit();
    // SAFETY: 16 writable, 8-byte aligned bytes.
    unsafe { events::read_comm_into(comm.as_mut_ptr().cast()) };
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
