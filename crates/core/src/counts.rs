//! Counts kept per key in a map, as the per-host bounds of the DHT and the
//! session keep them: a key is present only while its count is above zero,
//! so the map holds no more keys than there are things counted.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

/// One fewer under `key`, which is forgotten at zero; nothing if absent.
pub fn count_down<K: Hash + Eq>(counts: &mut HashMap<K, usize>, key: K) {
    if let Entry::Occupied(mut count) = counts.entry(key) {
        *count.get_mut() -= 1;
        if *count.get() == 0 {
            count.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_forgotten_at_zero() {
        let mut counts = HashMap::from([("a", 2), ("b", 1)]);
        count_down(&mut counts, "a");
        count_down(&mut counts, "b");
        count_down(&mut counts, "c");
        assert_eq!(counts, HashMap::from([("a", 1)]));
    }
}
