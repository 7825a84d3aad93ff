//! A table in least-recently-used order: values by key, where the one used the longest ago is
//! found in O(1) when one must make room (a UDP listener's flows by client, a limit zone's
//! buckets by client address: tables a client fills with addresses of its choosing).

use std::collections::HashMap;
use std::hash::Hash;

use slab::Slab;

/// Values by key, with their use order: an intrusive doubly linked list through a slab, so
/// that touching a value (every datagram, every request) is a few index writes, and the
/// oldest is the head. The index is std's `HashMap` (SipHash, keyed per process): its keys
/// come from clients.
#[derive(Debug)]
pub struct LruTable<K, V> {
    index: HashMap<K, usize>,
    nodes: Slab<Node<K, V>>,
    /// The least recently used flow.
    oldest: Option<usize>,
    /// The most recently used flow.
    newest: Option<usize>,
}

#[derive(Debug)]
struct Node<K, V> {
    key: K,
    value: V,
    older: Option<usize>,
    newer: Option<usize>,
}

impl<K, V> Default for LruTable<K, V> {
    fn default() -> Self {
        LruTable {
            index: HashMap::new(),
            nodes: Slab::new(),
            oldest: None,
            newest: None,
        }
    }
}

// === impl LruTable ===

impl<K: Copy + Eq + Hash, V> LruTable<K, V> {
    /// How many values there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The value of `key`, marked as the most recently used.
    pub fn touch(&mut self, key: &K) -> Option<&mut V> {
        let at = *self.index.get(key)?;
        self.unlink(at);
        self.link_newest(at);
        Some(&mut self.nodes[at].value)
    }

    /// The value of `key`, its place in the order unchanged.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let at = *self.index.get(key)?;
        Some(&mut self.nodes[at].value)
    }

    /// Adds the value of a key that has none, as the most recently used.
    pub fn insert(&mut self, key: K, value: V) -> &mut V {
        debug_assert!(!self.index.contains_key(&key), "one value per key");
        let at = self.nodes.insert(Node {
            key,
            value,
            older: None,
            newer: None,
        });
        self.index.insert(key, at);
        self.link_newest(at);
        &mut self.nodes[at].value
    }

    /// Removes and returns the least recently used value.
    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        let at = self.oldest?;
        Some(self.remove(at))
    }

    /// Removes and returns the least recently used value for which `take` says true (the
    /// walk stops at the first).
    pub fn pop_oldest_where(&mut self, mut take: impl FnMut(&V) -> bool) -> Option<(K, V)> {
        let mut at = self.oldest;
        while let Some(i) = at {
            if take(&self.nodes[i].value) {
                return Some(self.remove(i));
            }
            at = self.nodes[i].newer;
        }
        None
    }

    /// Keeps the values for which `keep` says true, in use order.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let mut at = self.oldest;
        while let Some(i) = at {
            let node = &mut self.nodes[i];
            at = node.newer;
            if !keep(&node.key, &mut node.value) {
                self.remove(i);
            }
        }
    }

    fn remove(&mut self, at: usize) -> (K, V) {
        self.unlink(at);
        let node = self.nodes.remove(at);
        self.index.remove(&node.key);
        (node.key, node.value)
    }

    fn unlink(&mut self, key: usize) {
        let (older, newer) = (self.nodes[key].older, self.nodes[key].newer);
        match older {
            Some(o) => self.nodes[o].newer = newer,
            None => self.oldest = newer,
        }
        match newer {
            Some(n) => self.nodes[n].older = older,
            None => self.newest = older,
        }
    }

    fn link_newest(&mut self, key: usize) {
        let node = &mut self.nodes[key];
        node.older = self.newest;
        node.newer = None;
        match self.newest {
            Some(n) => self.nodes[n].newer = Some(key),
            None => self.oldest = Some(key),
        }
        self.newest = Some(key);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    type FlowTable<V> = LruTable<SocketAddr, V>;

    fn client(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The clients from the least to the most recently used.
    fn order(table: &mut FlowTable<u16>) -> Vec<u16> {
        let mut seen = Vec::new();
        table.retain(|c, _| {
            seen.push(c.port());
            true
        });
        seen
    }

    #[test]
    fn the_least_recently_used_flow_goes_first() {
        let mut table = FlowTable::default();
        for port in 1..=4 {
            table.insert(client(port), port);
        }
        assert_eq!(table.touch(&client(1)).copied(), Some(1));
        assert_eq!(table.touch(&client(3)).copied(), Some(3));
        assert_eq!(table.touch(&client(9)), None);
        assert_eq!(order(&mut table), vec![2, 4, 1, 3]);
        assert_eq!(table.pop_oldest(), Some((client(2), 2)));
        table.retain(|c, _| c.port() != 1);
        assert_eq!(order(&mut table), vec![4, 3]);
        assert_eq!(table.len(), 2);
        assert_eq!(table.pop_oldest(), Some((client(4), 4)));
        assert_eq!(table.pop_oldest(), Some((client(3), 3)));
        assert_eq!(table.pop_oldest(), None);
        table.insert(client(5), 5);
        assert_eq!(order(&mut table), vec![5], "reusable once empty");
    }

    proptest::proptest! {
        /// Against a model (a vector in use order): any sequence of touches, inserts, pops
        /// (of the oldest, of the oldest even one) and removals leaves the same values in the
        /// same order.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((0u8..5, 0u16..8), 0..200)) {
            let mut table = FlowTable::default();
            let mut model: Vec<u16> = Vec::new();
            for (op, port) in ops {
                match op {
                    0 => {
                        let found = table.touch(&client(port)).is_some();
                        let at = model.iter().position(|&p| p == port);
                        proptest::prop_assert_eq!(found, at.is_some());
                        if let Some(at) = at {
                            model.remove(at);
                            model.push(port);
                        }
                    }
                    1 if !model.contains(&port) => {
                        table.insert(client(port), port);
                        model.push(port);
                    }
                    2 => {
                        let popped = table.pop_oldest().map(|(_, v)| v);
                        let want = (!model.is_empty()).then(|| model.remove(0));
                        proptest::prop_assert_eq!(popped, want);
                    }
                    3 => {
                        table.retain(|c, _| c.port() != port);
                        model.retain(|&p| p != port);
                    }
                    _ => {
                        // The oldest of an even port.
                        let popped = table.pop_oldest_where(|v| v % 2 == 0).map(|(_, v)| v);
                        let at = model.iter().position(|p| p % 2 == 0);
                        proptest::prop_assert_eq!(popped, at.map(|at| model.remove(at)));
                    }
                }
                proptest::prop_assert_eq!(table.len(), model.len());
                proptest::prop_assert_eq!(order(&mut table), model.clone());
            }
        }
    }
}
