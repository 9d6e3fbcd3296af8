//! Log2 histograms of nanosecond values, as the eBPF side fills them.
//!
//! Slot 0 holds the value 0 and slot `s >= 1` holds `[2^(s-1), 2^s - 1]`, so every slot has
//! an exact integer upper bound (`2^s - 1` ns) that maps one to one onto a Prometheus `le`.

/// 0, then one slot per bit position of a u64.
pub const HIST_SLOTS: usize = 65;

/// The slot of a value: its bit length.
///
/// Written as a binary search rather than `64 - leading_zeros()`: BPF has no clz, and the
/// verifier cannot bound the bit trick LLVM expands it to, while it tracks these branches.
#[inline(always)]
pub fn log2_slot(v: u64) -> u32 {
    if v == 0 {
        return 0;
    }
    let (mut x, mut bits) = (v, 1u32);
    for shift in [32u32, 16, 8, 4, 2, 1] {
        if x >> shift != 0 {
            x >>= shift;
            bits += shift;
        }
    }
    bits
}

/// Smallest value in a slot.
pub fn slot_lower_bound(slot: usize) -> u64 {
    match slot {
        0 => 0,
        s => 1u64 << (s - 1),
    }
}

/// Largest value in a slot (inclusive).
pub fn slot_upper_bound(slot: usize) -> u64 {
    match slot {
        0 => 0,
        64.. => u64::MAX,
        s => (1u64 << s) - 1,
    }
}

/// Sum of all slots.
pub fn total(hist: &[u64]) -> u64 {
    hist.iter().sum()
}

/// The q-quantile (0.0..=1.0) of a histogram, interpolated linearly inside the slot that
/// holds it, as Prometheus' histogram_quantile() does. None for an empty histogram.
pub fn quantile(hist: &[u64], q: f64) -> Option<u64> {
    let total = total(hist);
    if total == 0 {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    // The rank of the wanted observation, 1-based: q=0.5 of 4 values is the 2nd.
    let exact = q * total as f64;
    let floor = exact as u64;
    let rank = if (floor as f64) < exact {
        floor + 1
    } else {
        floor
    }
    .max(1);
    let mut below = 0u64;
    for (slot, &count) in hist.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if below + count >= rank {
            let lo = slot_lower_bound(slot) as f64;
            let hi = slot_upper_bound(slot) as f64;
            let within = (rank - below) as f64 / count as f64;
            return Some((lo + (hi - lo) * within) as u64);
        }
        below += count;
    }
    None
}

/// The highest non-empty slot's upper bound: the histogram's view of the maximum.
pub fn max_bound(hist: &[u64]) -> Option<u64> {
    hist.iter().rposition(|&c| c != 0).map(slot_upper_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cover_the_u64_range_without_gaps() {
        assert_eq!(log2_slot(0), 0);
        assert_eq!(log2_slot(1), 1);
        assert_eq!(log2_slot(2), 2);
        assert_eq!(log2_slot(3), 2);
        assert_eq!(log2_slot(4), 3);
        assert_eq!(log2_slot(1023), 10);
        assert_eq!(log2_slot(1024), 11);
        assert_eq!(log2_slot(u64::MAX), 64);
        for s in 1..HIST_SLOTS {
            assert_eq!(slot_lower_bound(s), slot_upper_bound(s - 1) + 1);
            assert_eq!(log2_slot(slot_lower_bound(s)) as usize, s);
            assert_eq!(log2_slot(slot_upper_bound(s)) as usize, s);
        }
    }

    #[test]
    fn quantiles_interpolate_within_a_slot() {
        let mut h = [0u64; HIST_SLOTS];
        assert_eq!(quantile(&h, 0.5), None);
        // 100 values in [1024, 2047].
        h[11] = 100;
        assert_eq!(quantile(&h, 0.0), Some(1024 + 1023 / 100));
        assert_eq!(quantile(&h, 0.5), Some(1024 + 1023 / 2));
        assert_eq!(quantile(&h, 1.0), Some(2047));
        assert_eq!(max_bound(&h), Some(2047));
    }

    #[test]
    fn quantiles_pick_the_right_slot() {
        let mut h = [0u64; HIST_SLOTS];
        h[3] = 90; // [4, 7]
        h[20] = 10; // [524288, 1048575]
        assert!(quantile(&h, 0.5).is_some_and(|v| (4..=7).contains(&v)));
        assert!(quantile(&h, 0.9).is_some_and(|v| (4..=7).contains(&v)));
        assert!(quantile(&h, 0.91).is_some_and(|v| v >= 524288));
        assert_eq!(quantile(&h, 0.99), Some(524288 + (524287 * 9) / 10));
    }
}
