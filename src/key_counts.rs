//! A count per key that holds only keys counted above 0: the live things of each
//! conversation (places in its line, answers on their way, busy replies waiting), each
//! added when it starts and removed when its guard is dropped.
//!
//! Invariant: no key maps to 0, so the map's size is the number of keys with something
//! live, and a conversation gone quiet leaves nothing behind.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub(crate) struct KeyCounts(HashMap<String, usize>);

impl KeyCounts {
    /// The count of `key` (0 for a key not counted).
    pub(crate) fn get(&self, key: &str) -> usize {
        self.0.get(key).copied().unwrap_or(0)
    }

    /// Counts one more for `key`.
    pub(crate) fn add(&mut self, key: &str) {
        *self.0.entry(key.to_string()).or_insert(0) += 1;
    }

    /// Counts one less for `key`, forgetting it at 0 (a key not counted stays so).
    pub(crate) fn remove_one(&mut self, key: &str) {
        if let Some(n) = self.0.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(key);
            }
        }
    }

    /// Keys counted above 0.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_counted_down_to_zero_is_forgotten() {
        let mut c = KeyCounts::default();
        c.add("a");
        c.add("a");
        c.add("b");
        assert_eq!((c.get("a"), c.get("b"), c.len()), (2, 1, 2));
        c.remove_one("a");
        c.remove_one("b");
        c.remove_one("never");
        assert_eq!((c.get("a"), c.get("b"), c.len()), (1, 0, 1));
        c.remove_one("a");
        assert!(c.is_empty());
    }
}
