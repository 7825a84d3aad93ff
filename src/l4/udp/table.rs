//! The flow table of one UDP listener: flows by client address, in least-recently-used order,
//! so that the flow idle the longest is found in O(1) when one must make room.

use std::collections::HashMap;
use std::net::SocketAddr;

use slab::Slab;

/// Flows by client, with their use order: an intrusive doubly linked list through a slab, so
/// that touching a flow (every datagram) is a few index writes, and the oldest is the head.
#[derive(Debug)]
pub(super) struct FlowTable<V> {
    by_client: HashMap<SocketAddr, usize>,
    nodes: Slab<Node<V>>,
    /// The least recently used flow.
    oldest: Option<usize>,
    /// The most recently used flow.
    newest: Option<usize>,
}

#[derive(Debug)]
struct Node<V> {
    client: SocketAddr,
    value: V,
    older: Option<usize>,
    newer: Option<usize>,
}

impl<V> Default for FlowTable<V> {
    fn default() -> Self {
        FlowTable {
            by_client: HashMap::new(),
            nodes: Slab::new(),
            oldest: None,
            newest: None,
        }
    }
}

// === impl FlowTable ===

impl<V> FlowTable<V> {
    /// How many flows there are.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The flow of `client`, marked as the most recently used.
    pub fn touch(&mut self, client: &SocketAddr) -> Option<&mut V> {
        let key = *self.by_client.get(client)?;
        self.unlink(key);
        self.link_newest(key);
        Some(&mut self.nodes[key].value)
    }

    /// Adds the flow of a client that has none, as the most recently used.
    pub fn insert(&mut self, client: SocketAddr, value: V) -> &mut V {
        debug_assert!(!self.by_client.contains_key(&client), "one flow per client");
        let key = self.nodes.insert(Node {
            client,
            value,
            older: None,
            newer: None,
        });
        self.by_client.insert(client, key);
        self.link_newest(key);
        &mut self.nodes[key].value
    }

    /// Removes and returns the least recently used flow.
    pub fn pop_oldest(&mut self) -> Option<(SocketAddr, V)> {
        let key = self.oldest?;
        Some(self.remove(key))
    }

    /// Keeps the flows for which `keep` says true, in use order.
    pub fn retain(&mut self, mut keep: impl FnMut(&SocketAddr, &mut V) -> bool) {
        let mut at = self.oldest;
        while let Some(key) = at {
            let node = &mut self.nodes[key];
            at = node.newer;
            if !keep(&node.client, &mut node.value) {
                self.remove(key);
            }
        }
    }

    fn remove(&mut self, key: usize) -> (SocketAddr, V) {
        self.unlink(key);
        let node = self.nodes.remove(key);
        self.by_client.remove(&node.client);
        (node.client, node.value)
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
    use super::*;

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
        /// Against a model (a vector in use order): any sequence of touches, inserts, pops and
        /// removals leaves the same flows in the same order.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((0u8..4, 0u16..8), 0..200)) {
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
                    _ => {
                        table.retain(|c, _| c.port() != port);
                        model.retain(|&p| p != port);
                    }
                }
                proptest::prop_assert_eq!(table.len(), model.len());
                proptest::prop_assert_eq!(order(&mut table), model.clone());
            }
        }
    }
}
