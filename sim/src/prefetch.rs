//! A cache hint for the memory of the next events' nodes.
//!
//! Every event of a 10,000-node run lands on a node whose state nobody
//! touched for milliseconds, so its first lines come from DRAM, one miss
//! after another. The window's events are known in advance: asking for the
//! next nodes' state while this one runs overlaps those misses with work.

/// Asks the CPU to bring the bytes of `v` into its caches. A hint only: it
/// reads nothing, changes nothing and cannot fault.
#[inline]
pub(crate) fn prefetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (v as *const T).cast::<i8>();
        for off in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: a prefetch never faults and has no visible effect, and
            // `p + off` stays inside the object `v` refers to.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}
