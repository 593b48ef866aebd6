//! A queue consumer connection's hold on its group.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::group::QueueGroup;

/// A queue consumer connection's hold on its group: the group's member
/// lingers after the last one is dropped.
pub(crate) struct Attached {
    pub group: Arc<QueueGroup>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.group.shared.attached.fetch_sub(1, Ordering::SeqCst);
    }
}
