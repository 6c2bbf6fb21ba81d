//! Run and event ids: UUID v7, time-ordered, generated without a system call.
//!
//! `Uuid::now_v7()` asks the OS for randomness on every call (a `getrandom` system call,
//! about a microsecond in a VM), and a task run needs four ids. Here the 74 bits after the
//! millisecond timestamp are a per-thread counter (42 bits, started at a random point each
//! millisecond, so ids of one thread are strictly increasing) followed by 32 random bits
//! from a per-thread generator seeded once.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

const COUNTER_BITS: u32 = 42;
/// The counter starts below this in each millisecond, leaving room for 2^41 ids per thread
/// and millisecond before it would spill into the next one.
const COUNTER_START_LIMIT: u64 = 1 << (COUNTER_BITS - 1);

thread_local! {
    static LAST: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// A new UUID v7.
///
/// ```
/// let a = flowkit::new_id();
/// let b = flowkit::new_id();
/// assert_eq!(a.get_version_num(), 7);
/// assert!(a < b, "ids of one thread increase");
/// ```
pub fn new_id() -> Uuid {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    new_id_at(now_ms)
}

/// A new UUID v7 for an instant the caller already read from the clock (milliseconds since
/// the Unix epoch), saving a second clock read.
pub(crate) fn new_id_at(now_ms: u64) -> Uuid {
    let (ms, counter) = LAST.with(|last| {
        let (last_ms, last_counter) = last.get();
        let next = if now_ms > last_ms {
            (now_ms, fastrand::u64(..COUNTER_START_LIMIT))
        } else if last_counter + 1 < (1 << COUNTER_BITS) {
            // Same millisecond (or the clock went back): keep counting from where we were.
            (last_ms, last_counter + 1)
        } else {
            (last_ms + 1, fastrand::u64(..COUNTER_START_LIMIT))
        };
        last.set(next);
        next
    });
    Uuid::from_u128(layout(ms, counter, fastrand::u32(..)))
}

/// The v7 bit layout: 48 bits of milliseconds, version 7, the top 12 counter bits, variant
/// `10`, the low 30 counter bits, 32 random bits.
fn layout(ms: u64, counter: u64, random: u32) -> u128 {
    let ms = u128::from(ms & ((1 << 48) - 1));
    let hi = u128::from(counter >> 30) & 0xfff;
    let lo = u128::from(counter) & ((1 << 30) - 1);
    (ms << 80) | (0x7 << 76) | (hi << 64) | (0b10 << 62) | (lo << 32) | u128::from(random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_variant_and_time() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let id = new_id();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = id.get_timestamp().expect("v7 has a timestamp").to_unix();
        let ms = secs * 1000 + u64::from(nanos) / 1_000_000;
        assert!(ms >= before && ms <= before + 1000, "{ms} vs {before}");
    }

    #[test]
    fn ids_of_one_thread_strictly_increase() {
        let ids: Vec<Uuid> = (0..100_000).map(|_| new_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn counter_order_is_preserved_by_the_layout() {
        let a = layout(5, (1 << 30) - 1, u32::MAX);
        let b = layout(5, 1 << 30, 0);
        assert!(
            a < b,
            "carry from the low to the high counter bits keeps the order"
        );
        assert_eq!(Uuid::from_u128(a).get_version_num(), 7);
    }

    #[test]
    fn ids_are_unique_across_threads() {
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..20_000).map(|_| new_id()).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<Uuid> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}

/// A hasher for maps keyed by run ids: the ids carry random bits already, so folding them
/// with a multiply is enough (SipHash was a tenth of the sink thread's time).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_usize(&mut self, _len: usize) {
        // The length prefix of a 16-byte id adds nothing.
    }
}

/// Builds [`IdHasher`]s.
pub(crate) type BuildIdHasher = std::hash::BuildHasherDefault<IdHasher>;

/// A map keyed by run ids.
pub(crate) type IdMap<V> = std::collections::HashMap<Uuid, V, BuildIdHasher>;
