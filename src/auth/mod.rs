//! Who may do what. A store ([`AuthStore`]: MySQL, Redis or the config file)
//! is read in full into
//! an in-process [`AuthCache`]; AUTH is answered from the cache only, and a
//! refresher thread reloads it periodically, keeping the last good copy when a
//! reload fails.

pub(crate) mod file;
pub(crate) mod mysql;
pub(crate) mod redis;
pub(crate) mod request;

use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Arc, RwLock};
use std::thread;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::secret::Secret;

pub use mysql::mask_password;
pub use request::{parse_auth_string, parse_wait_ms, AuthRequest, AuthStringError, Role, MAX_WAIT_MS};

/// One row of `auth_tb` joined with its `app_tb` row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Grant {
    pub group: String,
    pub topic: String,
    pub operation: u8,
    pub app_id: i64,
    pub app_key: String,
    pub app_secret: Secret,
    pub cluster: String,
}

impl Grant {
    pub(crate) fn allows(&self, role: Role) -> bool {
        self.operation & role.operation_bit() != 0
    }
}

/// Rows a store could not read in one load, each named by its table and row
/// id, never by a value. A row is warned about once, when first seen: a bad
/// row stays bad across refreshes, and a line per row per refresh would bury
/// the log.
pub(crate) struct SkippedRows {
    store: String,
    warned: HashSet<String>,
    current: Vec<String>,
}

impl SkippedRows {
    pub(crate) fn new(store: String) -> SkippedRows {
        SkippedRows { store, warned: HashSet::new(), current: Vec::new() }
    }

    /// Starts a load.
    pub(crate) fn begin(&mut self) {
        self.current.clear();
    }

    pub(crate) fn skip(&mut self, row: &str, problem: &str) {
        let line = format!("{row}: {problem}");
        if !self.warned.contains(&line) {
            log::warn!("auth: {}: skipped {line}", self.store);
        }
        self.current.push(line);
    }

    /// Ends a load that succeeded: a row fixed since is warned about again
    /// if it breaks again.
    pub(crate) fn finish(&mut self) {
        self.warned = self.current.iter().cloned().collect();
    }

    /// What this load skipped, in order.
    pub(crate) fn current(&self) -> Vec<String> {
        self.current.clone()
    }
}

/// Why a store could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{store}: {cause}")]
pub struct StoreError {
    pub store: String,
    #[source]
    pub cause: Box<dyn std::error::Error + Send + Sync>,
}

/// A source of grants. `load` returns every live grant; the cache does the rest.
pub(crate) trait AuthStore: Send {
    /// Names the store in logs and errors, without any password.
    fn describe(&self) -> String;
    fn load(&mut self) -> Result<Vec<Grant>, StoreError>;
    /// The rows the latest load skipped, each named by table and row id
    /// with its problem (never a value).
    fn skipped(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Why an AUTH was refused. The text never contains the secret, and until
/// the key and secret match it says nothing else either: a stranger cannot
/// learn which apps, groups or topics exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// Unknown key, wrong secret, or an app with no grant at all.
    #[error("invalid app key or secret")]
    BadCredentials,
    /// The app proved its secret; the group is not one of its own (whether
    /// it exists for another app is not said).
    #[error("group '{group}' is not granted to app '{key}'")]
    GroupNotGranted { group: String, key: String },
    #[error("topic '{topic}' is not granted to group '{group}'")]
    TopicNotGranted { group: String, topic: String },
    #[error("role '{role}' is not allowed for group '{group}'")]
    RoleNotAllowed { role: Role, group: String },
    #[error("cluster '{cluster}' of app '{key}' is not configured")]
    ClusterNotConfigured { cluster: String, key: String },
}

/// The grants of one load, indexed by app key.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    by_key: HashMap<String, Vec<Grant>>,
}

/// Compared against when the key is unknown, so that a miss costs the same
/// secret comparison as a hit.
const NO_SECRET: &[u8] = &[0u8; 64];

impl Snapshot {
    pub(crate) fn new(grants: Vec<Grant>) -> Snapshot {
        let mut by_key: HashMap<String, Vec<Grant>> = HashMap::new();
        for g in grants {
            by_key.entry(g.app_key.clone()).or_default().push(g);
        }
        Snapshot { by_key }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.values().map(Vec::len).sum()
    }

    /// Checks a request: key and secret first, every failure there the
    /// same; then, for an app that proved its secret, group, topic, role and
    /// cluster, each failure with its own cause.
    /// `key` if it is an app of the store, else empty: what a refusal's
    /// metric may name (a stranger's key never becomes a label).
    pub(crate) fn known_app<'k>(&self, key: &'k str) -> &'k str {
        if self.by_key.contains_key(key) {
            key
        } else {
            ""
        }
    }

    pub(crate) fn check(
        &self,
        req: &AuthRequest,
        cluster_known: impl Fn(&str) -> bool,
    ) -> Result<Grant, AuthError> {
        let grants = self.by_key.get(&req.key).map(Vec::as_slice).unwrap_or_default();
        // Rows of one app share its secret; compare each, without stopping
        // early, so the time does not depend on which matched.
        let mut proven = false;
        for g in grants {
            proven |= constant_time_eq(g.app_secret.expose().as_bytes(), req.secret.expose().as_bytes());
        }
        if grants.is_empty() {
            proven |= constant_time_eq(NO_SECRET, req.secret.expose().as_bytes());
        }
        if !proven {
            return Err(AuthError::BadCredentials);
        }
        let own: Vec<&Grant> = grants
            .iter()
            .filter(|g| {
                g.group == req.group
                    && constant_time_eq(g.app_secret.expose().as_bytes(), req.secret.expose().as_bytes())
            })
            .collect();
        if own.is_empty() {
            return Err(AuthError::GroupNotGranted { group: req.group.clone(), key: req.key.clone() });
        }
        let grant = own.into_iter().find(|g| g.topic == req.topic).ok_or_else(|| {
            AuthError::TopicNotGranted { group: req.group.clone(), topic: req.topic.clone() }
        })?;
        if !grant.allows(req.role) {
            return Err(AuthError::RoleNotAllowed { role: req.role, group: req.group.clone() });
        }
        if !cluster_known(&grant.cluster) {
            return Err(AuthError::ClusterNotConfigured {
                cluster: grant.cluster.clone(),
                key: req.key.clone(),
            });
        }
        Ok(grant.clone())
    }
}

/// Compares without an early exit, so the time taken says nothing about how
/// much of a guessed secret was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// The current snapshot, shared by every connection.
#[derive(Default)]
pub(crate) struct AuthCache {
    current: RwLock<Arc<Snapshot>>,
}

impl AuthCache {
    pub(crate) fn new(snapshot: Snapshot) -> AuthCache {
        AuthCache { current: RwLock::new(Arc::new(snapshot)) }
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, snapshot: Snapshot) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }
}

/// Loads the store once; used at startup, where a failure stops the server.
pub(crate) fn initial_load(store: &mut dyn AuthStore) -> Result<AuthCache, StoreError> {
    let grants = store.load()?;
    log::info!("auth: loaded {} grants from {}", grants.len(), store.describe());
    Ok(AuthCache::new(Snapshot::new(grants)))
}

/// What a refresh changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Auth groups whose grants differ in any way (removed, new secret or
    /// key, other topic, operation or cluster): their open connections must
    /// authenticate again.
    pub groups: HashSet<String>,
    /// Clusters some grant still uses.
    pub clusters_in_use: HashSet<String>,
}

impl Snapshot {
    /// Compares with the next snapshot.
    pub(crate) fn changes_to(&self, next: &Snapshot) -> Changes {
        let (old, new) = (self.by_group(), next.by_group());
        let groups = old
            .iter()
            .filter(|(g, grants)| new.get(*g) != Some(grants))
            .map(|(g, _)| g.to_string())
            .collect();
        let clusters_in_use = next.by_key.values().flatten().map(|g| g.cluster.clone()).collect();
        Changes { groups, clusters_in_use }
    }

    /// The clusters the grants name.
    pub(crate) fn clusters(&self) -> std::collections::BTreeSet<String> {
        self.by_key.values().flatten().map(|g| g.cluster.clone()).collect()
    }

    /// Every group's grants, sorted, so two loads compare whatever order
    /// the rows came in.
    fn by_group(&self) -> HashMap<&str, Vec<&Grant>> {
        let mut groups: HashMap<&str, Vec<&Grant>> = HashMap::new();
        for g in self.by_key.values().flatten() {
            groups.entry(&g.group).or_default().push(g);
        }
        for grants in groups.values_mut() {
            grants.sort();
        }
        groups
    }
}

/// The thread that keeps the cache fresh.
pub(crate) struct Refresher {
    trigger: Option<mpsc::Sender<()>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Refresher {
    /// Reloads the store now (SIGHUP).
    pub(crate) fn trigger(&self) {
        if let Some(t) = &self.trigger {
            let _ = t.send(());
        }
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(mut self) {
        self.trigger.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Reloads the store every `interval` and on [`Refresher::trigger`]; after
/// each successful load, `on_change` learns what changed. A failed load keeps
/// the last good snapshot serving; the first failure of an outage is a
/// warning, later ones are debug lines until a load succeeds. A panic in the
/// store or in `on_change` is caught and logged as an error, so the thread
/// never dies silently: the next tick tries again.
pub(crate) fn spawn_refresher(
    mut store: Box<dyn AuthStore>,
    cache: Arc<AuthCache>,
    interval: Duration,
    metrics: Arc<Metrics>,
    on_change: impl Fn(&Changes) + Send + 'static,
) -> Refresher {
    let (trigger, wake) = mpsc::channel::<()>();
    let handle = thread::Builder::new()
        .name("auth-refresh".into())
        .spawn(move || {
            let mut failing = false;
            while let Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) = wake.recv_timeout(interval) {
                let refreshed = panic::catch_unwind(AssertUnwindSafe(|| {
                    let grants = store.load()?;
                    let next = Snapshot::new(grants);
                    let changes = cache.snapshot().changes_to(&next);
                    log::debug!("auth: refreshed {} grants", next.len());
                    metrics.refreshed(next.len());
                    // Replaced before connections are told, so their
                    // reconnects already see the new rules.
                    cache.replace(next);
                    on_change(&changes);
                    Ok::<(), StoreError>(())
                }));
                if !matches!(refreshed, Ok(Ok(()))) {
                    metrics.refresh_failed();
                }
                match refreshed {
                    Ok(Ok(())) if failing => {
                        log::info!("auth: {} reachable again", store.describe());
                        failing = false;
                    }
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if !failing => {
                        log::warn!("auth: refresh failed, serving the last good grants: {e}");
                        failing = true;
                    }
                    Ok(Err(e)) => log::debug!("auth: refresh still failing: {e}"),
                    Err(_) => {
                        // The panic's own message went to stderr through the hook.
                        log::error!(
                            "auth: refresh of {} panicked; serving the last good grants, retrying next tick",
                            store.describe()
                        );
                        failing = true;
                    }
                }
            }
        })
        .expect("spawn auth refresher");
    Refresher { trigger: Some(trigger), handle: Some(handle) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(group: &str, topic: &str, op: u8, key: &str, cluster: &str) -> Grant {
        Grant {
            group: group.into(),
            topic: topic.into(),
            operation: op,
            app_id: 1,
            app_key: key.into(),
            app_secret: format!("{key}-secret").into(),
            cluster: cluster.into(),
        }
    }

    fn req(s: &str) -> AuthRequest {
        parse_auth_string(s).unwrap()
    }

    #[test]
    fn credentials_first_then_each_check_has_its_own_error() {
        let snap = Snapshot::new(vec![
            grant("g", "t", 2, "k", "c1"),
            grant("g2", "t2", 3, "k2", "gone"),
            grant("other", "t", 3, "k3", "c1"),
        ]);
        let known = |c: &str| c == "c1";
        assert_eq!(snap.check(&req("k:k-secret@g/topic=t&role=pub"), known).unwrap().topic, "t");
        let cases = [
            // Until key and secret match, one and the same answer.
            ("z:k-secret@g/topic=t&role=pub", AuthError::BadCredentials),
            ("k:nope@g/topic=t&role=pub", AuthError::BadCredentials),
            ("k:nope@nosuchgroup/topic=x&role=sub", AuthError::BadCredentials),
            ("z:nope@other/topic=t&role=pub", AuthError::BadCredentials),
            // Then what the proven app lacks; another app's group and an
            // unknown one read the same.
            (
                "k:k-secret@other/topic=t&role=pub",
                AuthError::GroupNotGranted { group: "other".into(), key: "k".into() },
            ),
            (
                "k:k-secret@nosuchgroup/topic=t&role=pub",
                AuthError::GroupNotGranted { group: "nosuchgroup".into(), key: "k".into() },
            ),
            (
                "k:k-secret@g/topic=x&role=pub",
                AuthError::TopicNotGranted { group: "g".into(), topic: "x".into() },
            ),
            (
                "k:k-secret@g/topic=t&role=sub",
                AuthError::RoleNotAllowed { role: Role::Sub, group: "g".into() },
            ),
            (
                "k2:k2-secret@g2/topic=t2&role=sub",
                AuthError::ClusterNotConfigured { cluster: "gone".into(), key: "k2".into() },
            ),
        ];
        for (s, want) in cases {
            let got = snap.check(&req(s), known).unwrap_err();
            let text = got.to_string();
            // Neither the secret offered nor any stored one may appear.
            for secret in [req(s).secret.expose(), "k-secret", "k2-secret", "k3-secret"] {
                assert!(!text.contains(secret), "{text:?} shows {secret:?}");
            }
            assert_eq!(got, want, "{s}");
        }
    }

    /// Panics on its first load, fails on its second, then serves one grant.
    struct FlakyStore(usize);

    impl AuthStore for FlakyStore {
        fn describe(&self) -> String {
            "flaky".into()
        }

        fn load(&mut self) -> Result<Vec<Grant>, StoreError> {
            self.0 += 1;
            match self.0 {
                1 => panic!("a store bug"),
                2 => Err(StoreError { store: "flaky".into(), cause: "down".into() }),
                _ => Ok(vec![grant("g", "t", 3, "k", "c1")]),
            }
        }
    }

    #[test]
    fn refresher_survives_a_panicking_store() {
        let cache = Arc::new(AuthCache::new(Snapshot::new(vec![grant("old", "t", 3, "k", "c1")])));
        let refresher = spawn_refresher(
            Box::new(FlakyStore(0)),
            cache.clone(),
            Duration::from_millis(10),
            Arc::default(),
            |_| {},
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cache.snapshot().by_group().contains_key("old") {
            assert!(std::time::Instant::now() < deadline, "the refresher stopped after the panic");
            thread::sleep(Duration::from_millis(10));
        }
        assert!(cache.snapshot().by_group().contains_key("g"));
        refresher.stop();
    }

    #[test]
    fn changes_name_every_altered_group() {
        let base = vec![
            grant("same", "t", 3, "k", "c1"),
            grant("secret", "t", 3, "k", "c1"),
            grant("gone", "t", 3, "k", "c1"),
            grant("op", "t", 3, "k", "c1"),
            grant("moved", "t", 3, "k", "c1"),
            grant("two", "t1", 3, "k", "c1"),
            grant("two", "t2", 3, "k", "c1"),
        ];
        let old = Snapshot::new(base.clone());
        let mut next = base;
        next.retain(|g| g.group != "gone");
        for g in next.iter_mut() {
            match g.group.as_str() {
                "secret" => g.app_secret = "new".into(),
                "op" => g.operation = 1,
                "moved" => g.cluster = "c2".into(),
                _ => {}
            }
        }
        // Same grants in another order are no change.
        next.reverse();
        next.push(grant("added", "t", 3, "k", "c1"));
        let changes = old.changes_to(&Snapshot::new(next));
        let want: HashSet<String> = ["secret", "gone", "op", "moved"].iter().map(|s| s.to_string()).collect();
        assert_eq!(changes.groups, want);
        let clusters: HashSet<String> = ["c1", "c2"].iter().map(|s| s.to_string()).collect();
        assert_eq!(changes.clusters_in_use, clusters);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"\0"));
    }

    #[test]
    fn operation_bits() {
        assert!(grant("g", "t", 3, "k", "c").allows(Role::Pub));
        assert!(grant("g", "t", 3, "k", "c").allows(Role::Sub));
        assert!(!grant("g", "t", 1, "k", "c").allows(Role::Pub));
        assert!(!grant("g", "t", 2, "k", "c").allows(Role::Sub));
        assert!(!grant("g", "t", 0, "k", "c").allows(Role::Sub));
    }
}
