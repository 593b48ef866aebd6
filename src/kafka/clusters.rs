//! The clusters of `databus.toml`, as one table that SIGHUP may replace
//! while databus runs (a rotated SASL password, a new CA file, another
//! broker list): what is looked up from it after the swap, new producers
//! and new subscribers, uses the new settings; what already holds a client
//! (a record in flight, a joined subscriber) finishes on the old one.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::Cluster;

pub(crate) struct Clusters(RwLock<Arc<BTreeMap<String, Cluster>>>);

impl Clusters {
    pub(crate) fn new(clusters: BTreeMap<String, Cluster>) -> Clusters {
        Clusters(RwLock::new(Arc::new(clusters)))
    }

    /// The table as it is now.
    pub(crate) fn now(&self) -> Arc<BTreeMap<String, Cluster>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn get(&self, name: &str) -> Option<Cluster> {
        self.now().get(name).cloned()
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.now().contains_key(name)
    }

    /// Puts `clusters` in place of the table; returns the names of those
    /// added, removed or changed.
    pub(crate) fn replace(&self, clusters: BTreeMap<String, Cluster>) -> Vec<String> {
        let mut table = self.0.write().unwrap_or_else(|e| e.into_inner());
        let mut changed: Vec<String> = table
            .iter()
            .filter(|(name, old)| clusters.get(*name) != Some(old))
            .map(|(name, _)| name.clone())
            .collect();
        changed.extend(clusters.keys().filter(|name| !table.contains_key(*name)).cloned());
        changed.sort();
        *table = Arc::new(clusters);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(broker: &str) -> Cluster {
        Cluster { brokers: vec![broker.into()], ..Cluster::default() }
    }

    #[test]
    fn replace_names_what_was_added_removed_or_changed() {
        let table = Clusters::new(BTreeMap::from([
            ("kept".to_owned(), cluster("a:1")),
            ("changed".to_owned(), cluster("b:1")),
            ("removed".to_owned(), cluster("c:1")),
        ]));
        let changed = table.replace(BTreeMap::from([
            ("kept".to_owned(), cluster("a:1")),
            ("changed".to_owned(), cluster("b:2")),
            ("added".to_owned(), cluster("d:1")),
        ]));
        assert_eq!(changed, ["added", "changed", "removed"]);
        assert_eq!(table.get("changed").unwrap().brokers, ["b:2"]);
        assert!(!table.contains("removed"));
        assert!(table.replace((*table.now()).clone()).is_empty(), "the same table changes nothing");
    }
}
