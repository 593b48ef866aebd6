//! How many members each (cluster, group, topic) has on this databus, so
//! that a subscriber is refused when its group already has a member for
//! every partition, even before the cluster lists the members that are
//! still joining.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Member;

/// Subscriber connections per (cluster, group, topic) on this databus,
/// counted from the moment they subscribe: the cluster's DescribeGroups
/// lists a member only once its JoinGroup has completed, so two connections
/// authenticating at the same moment would both see room for one.
#[derive(Default)]
pub(crate) struct Memberships {
    pub(super) count: Mutex<HashMap<(String, String, String), usize>>,
}

impl Memberships {
    /// Members per (group, topic), summed over clusters.
    pub(crate) fn counts(&self) -> Vec<((String, String), usize)> {
        let count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        let mut sums: std::collections::BTreeMap<(String, String), usize> = Default::default();
        for ((_, group, topic), n) in count.iter() {
            *sums.entry((group.clone(), topic.clone())).or_default() += n;
        }
        sums.into_iter().collect()
    }
}

/// A counted member; uncounted when dropped.
pub(crate) struct Membership {
    pub(super) registry: Arc<Memberships>,
    pub(super) key: (String, String, String),
}

impl Membership {
    /// Counts `member` (a queue group's shared member, which has no limit).
    pub(crate) fn count(registry: &Arc<Memberships>, member: Member<'_>) -> Membership {
        let key = (member.cluster.to_owned(), member.group.to_owned(), member.topic.to_owned());
        *registry.count.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default() += 1;
        Membership { registry: registry.clone(), key }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut count = self.registry.count.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = count.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                count.remove(&self.key);
            }
        }
    }
}
