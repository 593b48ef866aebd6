//! Every open connection, with the auth group it serves, so that the server
//! can interrupt connections from outside their worker threads: all of them
//! at shutdown, those of one group when its grant changes.
//!
//! Interrupting sets the connection's [`Interrupt`] flag and shuts the read
//! side of its socket: a worker blocked reading wakes at once, a command in
//! flight still finishes and gets its reply, and a long `MGET` sees the flag
//! between polls.

use std::collections::{HashMap, HashSet};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Why a connection is asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupt {
    None = 0,
    Shutdown = 1,
    GrantChanged = 2,
}

/// A connection's interrupt flag, shared between its worker and the registry.
#[derive(Debug, Default)]
pub(crate) struct InterruptFlag(AtomicU8);

impl InterruptFlag {
    pub(crate) fn get(&self) -> Interrupt {
        match self.0.load(Ordering::SeqCst) {
            0 => Interrupt::None,
            1 => Interrupt::Shutdown,
            _ => Interrupt::GrantChanged,
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.get() != Interrupt::None
    }

    fn set(&self, why: Interrupt) {
        // The first reason wins: a shutdown is not reported as a grant change.
        let _ = self.0.compare_exchange(0, why as u8, Ordering::SeqCst, Ordering::SeqCst);
    }
}

struct Entry {
    stream: TcpStream,
    group: Option<String>,
    flag: Arc<InterruptFlag>,
}

#[derive(Default)]
pub(crate) struct Connections {
    next_id: AtomicUsize,
    open: Mutex<HashMap<usize, Entry>>,
}

/// A registered connection; unregistered when dropped.
pub(crate) struct Registration {
    id: usize,
    registry: Arc<Connections>,
    pub flag: Arc<InterruptFlag>,
}

impl Registration {
    /// The connection's number, unique while the server runs (`CLIENT ID`).
    pub(crate) fn id(&self) -> usize {
        self.id
    }

    /// Records the auth group the connection now serves.
    pub(crate) fn set_group(&self, group: &str) {
        if let Some(e) = self.registry.lock().get_mut(&self.id) {
            e.group = Some(group.to_owned());
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Entry>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection, unless `max` are open already.
    pub(crate) fn add(self: &Arc<Self>, stream: &TcpStream, max: usize) -> Option<Registration> {
        let clone = stream.try_clone().ok()?;
        let mut open = self.lock();
        if open.len() >= max {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let flag = Arc::new(InterruptFlag::default());
        open.insert(id, Entry { stream: clone, group: None, flag: flag.clone() });
        Some(Registration { id, registry: self.clone(), flag })
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Interrupts every connection serving one of `groups`; returns how many.
    pub(crate) fn interrupt_groups(&self, groups: &HashSet<String>) -> usize {
        let open = self.lock();
        let hit: Vec<&Entry> =
            open.values().filter(|e| e.group.as_ref().is_some_and(|g| groups.contains(g))).collect();
        for e in &hit {
            interrupt(e, Interrupt::GrantChanged);
        }
        hit.len()
    }

    pub(crate) fn interrupt_all(&self) {
        for e in self.lock().values() {
            interrupt(e, Interrupt::Shutdown);
        }
    }
}

fn interrupt(e: &Entry, why: Interrupt) {
    e.flag.set(why);
    let _ = e.stream.shutdown(Shutdown::Read);
}
