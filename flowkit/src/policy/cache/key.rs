//! Cache keys: the BLAKE3 of a task's identity, the macro's hash of its source and the hash of
//! its inputs.

use serde::Serialize;
use std::hash::{Hash, Hasher};
use uuid::Uuid;

/// A cache key: BLAKE3 of task identity, source hash and inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key as 64 lowercase hex digits.
    pub(crate) fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl Hash for CacheKey {
    // The key is already a uniformly distributed hash: eight of its bytes make a perfectly good
    // table hash, which keeps a memory hit free of a second hashing pass.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

/// Passes [`CacheKey`]'s pre-hashed word through; anything else gets FNV-1a.
#[derive(Default)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.0 == 0 {
            self.0 = 0xcbf2_9ce4_8422_2325;
        }
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The key of a task's result for inputs whose hash is `inputs`.
///
/// Every part is length-prefixed, so no two different `(task_key, source_hash)` pairs can
/// produce the same hashed bytes.
pub(crate) fn cache_key(task_key: &str, source_hash: &str, inputs: &[u8; 32]) -> CacheKey {
    let mut h = blake3::Hasher::new_derive_key("flowkit 2026 result cache key v1");
    for part in [task_key.as_bytes(), source_hash.as_bytes()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(inputs);
    CacheKey(*h.finalize().as_bytes())
}

/// The memory key under which the kept result of run `run_id` lives.
pub(super) fn result_key(run_id: Uuid) -> CacheKey {
    let mut h = blake3::Hasher::new_derive_key("flowkit 2026 kept result v1");
    h.update(run_id.as_bytes());
    CacheKey(*h.finalize().as_bytes())
}

/// BLAKE3 of the JSON serialization of `value`, streamed into the hasher (no intermediate
/// buffer).
///
/// Equal values hash equally as long as they serialize equally. `HashMap` and `HashSet`
/// serialize in their (randomized) iteration order, so two equal maps usually hash
/// differently: use `BTreeMap`/`BTreeSet` (or an insertion-ordered map) in cached inputs.
pub fn hash_inputs<T: Serialize + ?Sized>(value: &T) -> Result<[u8; 32], String> {
    let mut h = blake3::Hasher::new();
    serde_json::to_writer(&mut h, value).map_err(|e| e.to_string())?;
    Ok(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn hash_inputs_is_stable_for_equal_values() {
        #[derive(Serialize)]
        struct Args {
            name: String,
            sizes: Vec<u32>,
            opts: BTreeMap<String, f64>,
        }
        let make = || Args {
            name: "x".into(),
            sizes: vec![1, 2, 3],
            opts: [("b".to_string(), 2.0), ("a".to_string(), 1.0)].into(),
        };
        let a = hash_inputs(&make()).unwrap();
        assert_eq!(a, hash_inputs(&make()).unwrap());
        // It is the BLAKE3 of the JSON, so it is stable across processes and versions too.
        let json = serde_json::to_vec(&make()).unwrap();
        assert_eq!(a, *blake3::hash(&json).as_bytes());
        let mut other = make();
        other.sizes.push(4);
        assert_ne!(a, hash_inputs(&other).unwrap());
    }

    #[test]
    fn hash_inputs_reports_unserializable_values() {
        let mut map = BTreeMap::new();
        map.insert((1, 2), "tuple keys are not JSON");
        assert!(hash_inputs(&map).is_err());
    }

    #[test]
    fn cache_key_parts_do_not_run_into_each_other() {
        let i = [0u8; 32];
        assert_ne!(cache_key("ab", "c", &i), cache_key("a", "bc", &i));
        assert_ne!(cache_key("", "x", &i), cache_key("x", "", &i));
        assert_ne!(
            cache_key("t", "s", &i),
            result_key(Uuid::from_bytes([0; 16]))
        );
    }

    proptest! {
        #[test]
        fn cache_key_changes_with_every_part(
            task in ".{0,20}", source in ".{0,20}", inputs in any::<[u8; 32]>(),
            task2 in ".{0,20}", source2 in ".{0,20}", inputs2 in any::<[u8; 32]>(),
        ) {
            let k = cache_key(&task, &source, &inputs);
            prop_assert_eq!(k, cache_key(&task, &source, &inputs));
            prop_assert_eq!(k == cache_key(&task2, &source, &inputs), task == task2);
            prop_assert_eq!(k == cache_key(&task, &source2, &inputs), source == source2);
            prop_assert_eq!(k == cache_key(&task, &source, &inputs2), inputs == inputs2);
        }
    }
}
