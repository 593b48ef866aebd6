//! Per-app limits: how fast an app may publish (records and bytes per
//! second) and how many connections, and subscriber connections, it may
//! hold on this databus. Behind one gateway Kafka's own quotas see a single
//! client, so without these one app's flood crowds out every other app's
//! SETs. Over its rate a publisher is slowed, as Kafka's quotas throttle:
//! its request waits until the app is back within its rate, up to
//! `limits.max_delay_ms`; past that it gets `TRYAGAIN` naming the limit.
//! Over its connection limit an AUTH gets `TRYAGAIN`. Settings come from
//! `[limits]` (defaults for every app, off unless set) and
//! `[limits.apps."<key>"]` (one app's own), re-read on SIGHUP.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::keys::{Check, ConfigError, Key, Number};
use crate::metrics::Metrics;

/// `[limits]` of `databus.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub publish_records_per_s: Option<u64>,
    pub publish_bytes_per_s: Option<u64>,
    pub connections: Option<u64>,
    pub subscribers: Option<u64>,
    pub max_delay_ms: Option<u64>,
    /// Each app's own, by its key.
    #[serde(default)]
    pub apps: BTreeMap<String, RawAppLimits>,
}

/// One app's limits as written; a key left out falls back to `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAppLimits {
    pub publish_records_per_s: Option<u64>,
    pub publish_bytes_per_s: Option<u64>,
    pub connections: Option<u64>,
    pub subscribers: Option<u64>,
}

pub(crate) const RECORDS_PER_S: Number = Number::optional(
    "limits.publish_records_per_s",
    1,
    100_000_000,
    "records per second each app may publish (SET, HSET, XADD, HTTP); a client over it is slowed",
);
pub(crate) const BYTES_PER_S: Number = Number::optional(
    "limits.publish_bytes_per_s",
    1,
    1 << 40,
    "value bytes per second each app may publish; keep it above the largest value",
);
pub(crate) const CONNECTIONS: Number =
    Number::optional("limits.connections", 1, 1_000_000, "connections each app may hold on this databus");
pub(crate) const SUBSCRIBERS: Number = Number::optional(
    "limits.subscribers",
    1,
    1_000_000,
    "subscriber connections each app may hold on this databus",
);
pub(crate) const MAX_DELAY_MS: Number = Number::count(
    "limits.max_delay_ms",
    1000,
    1,
    60_000,
    "longest a request over its app's rate is held; past it, `TRYAGAIN` naming the limit",
);
pub(crate) const APP_RECORDS_PER_S: Number =
    Number { key: "limits.apps.<name>.publish_records_per_s", doc: "the app's own", ..RECORDS_PER_S };
pub(crate) const APP_BYTES_PER_S: Number =
    Number { key: "limits.apps.<name>.publish_bytes_per_s", doc: "the app's own", ..BYTES_PER_S };
pub(crate) const APP_CONNECTIONS: Number =
    Number { key: "limits.apps.<name>.connections", doc: "the app's own", ..CONNECTIONS };
pub(crate) const APP_SUBSCRIBERS: Number =
    Number { key: "limits.apps.<name>.subscribers", doc: "the app's own", ..SUBSCRIBERS };

/// The keys of `[limits]`, in the reference's order.
pub(crate) const KEYS: &[Key] = &[
    Key::Number(RECORDS_PER_S),
    Key::Number(BYTES_PER_S),
    Key::Number(CONNECTIONS),
    Key::Number(SUBSCRIBERS),
    Key::Number(MAX_DELAY_MS),
    Key::Number(APP_RECORDS_PER_S),
    Key::Number(APP_BYTES_PER_S),
    Key::Number(APP_CONNECTIONS),
    Key::Number(APP_SUBSCRIBERS),
];

/// One app's limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AppLimits {
    pub records_per_s: Option<u64>,
    pub bytes_per_s: Option<u64>,
    pub connections: Option<u64>,
    pub subscribers: Option<u64>,
}

impl AppLimits {
    /// Whether a publish rate limits the app.
    fn is_rated(&self) -> bool {
        self.records_per_s.is_some() || self.bytes_per_s.is_some()
    }
}

/// Every app's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LimitSettings {
    pub default: AppLimits,
    pub apps: HashMap<String, AppLimits>,
    pub max_delay: Duration,
}

impl Default for LimitSettings {
    fn default() -> LimitSettings {
        LimitSettings {
            default: AppLimits::default(),
            apps: HashMap::new(),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl LimitSettings {
    pub(crate) fn from_raw(raw: RawLimits, check: Check<'_>) -> Result<LimitSettings, ConfigError> {
        let defaults = RawAppLimits {
            publish_records_per_s: raw.publish_records_per_s,
            publish_bytes_per_s: raw.publish_bytes_per_s,
            connections: raw.connections,
            subscribers: raw.subscribers,
        };
        let default = app_limits(&defaults, AppLimits::default(), None, check)?;
        let mut apps = HashMap::new();
        for (app, own) in &raw.apps {
            apps.insert(app.clone(), app_limits(own, default, Some(app), check)?);
        }
        let max_delay = check.millis(MAX_DELAY_MS, raw.max_delay_ms)?;
        Ok(LimitSettings { default, apps, max_delay })
    }

    fn of(&self, app: &str) -> AppLimits {
        self.apps.get(app).copied().unwrap_or(self.default)
    }
}

/// `raw`'s limits over `fallback`; `app` names an app's own section.
fn app_limits(
    raw: &RawAppLimits,
    fallback: AppLimits,
    app: Option<&str>,
    check: Check<'_>,
) -> Result<AppLimits, ConfigError> {
    let field = |n: Number, own: Number, value: Option<u64>, fallback: Option<u64>| {
        let key = app.map_or(n.key.to_owned(), |app| own.key.replace("<name>", app));
        Ok::<_, ConfigError>(check.optional(n, &key, value)?.or(fallback))
    };
    Ok(AppLimits {
        records_per_s: field(
            RECORDS_PER_S,
            APP_RECORDS_PER_S,
            raw.publish_records_per_s,
            fallback.records_per_s,
        )?,
        bytes_per_s: field(BYTES_PER_S, APP_BYTES_PER_S, raw.publish_bytes_per_s, fallback.bytes_per_s)?,
        connections: field(CONNECTIONS, APP_CONNECTIONS, raw.connections, fallback.connections)?,
        subscribers: field(SUBSCRIBERS, APP_SUBSCRIBERS, raw.subscribers, fallback.subscribers)?,
    })
}

/// Which limit an app went over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitError {
    #[error("app '{app}' is at its limit of {limit} connections on this databus (limits.connections)")]
    Connections { app: String, limit: u64 },
    #[error(
        "app '{app}' is at its limit of {limit} subscriber connections on this databus (limits.subscribers)"
    )]
    Subscribers { app: String, limit: u64 },
    #[error("app '{app}' publishes over its limit of {limit} {what}/s (limits.publish_{what}_per_s): slowed past limits.max_delay_ms, try again later")]
    Rate { app: String, what: &'static str, limit: u64 },
}

impl LimitError {
    /// The limit's name, as the refusal metric counts it.
    fn limit(&self) -> &'static str {
        match self {
            LimitError::Connections { .. } => "connections",
            LimitError::Subscribers { .. } => "subscribers",
            LimitError::Rate { what: "records", .. } => "publish_records_per_s",
            LimitError::Rate { .. } => "publish_bytes_per_s",
        }
    }
}

/// The limits of every app that has connected, and their counts.
pub(crate) struct Limiter {
    settings: RwLock<LimitSettings>,
    /// Apps seen so far: only keys that proved their secret, so as many as
    /// the auth store holds.
    apps: Mutex<HashMap<String, Arc<App>>>,
    metrics: Arc<Metrics>,
}

/// One app's counts and rates, shared by its connections.
pub(crate) struct App {
    key: String,
    /// Whether it has a rate limit: read without the lock, so that the
    /// SETs of an app without one (every app, by default) never meet on it.
    rated: AtomicBool,
    connections: AtomicU64,
    subscribers: AtomicU64,
    rates: Mutex<Rates>,
    metrics: Arc<Metrics>,
}

/// An app's current limits and where its publishing stands against them.
struct Rates {
    limits: AppLimits,
    max_delay: Duration,
    records: Pace,
    bytes: Pace,
}

/// A rate kept as the generic cell rate algorithm does: the time by which
/// everything admitted so far would have gone out at the rate. Up to a
/// second's worth goes at once; past that, each admission waits.
#[derive(Default)]
struct Pace {
    due: Option<Instant>,
}

/// What may go at once before an admission waits: a second of the rate.
const BURST: Duration = Duration::from_secs(1);

impl Pace {
    /// When `units` at `per_s` would be admitted, and the due time after.
    fn admit(&self, now: Instant, units: u64, per_s: u64) -> (Duration, Instant) {
        let start = self.due.map_or(now, |due| due.max(now));
        let due = start + Duration::from_secs_f64(units as f64 / per_s as f64);
        let wait = due.checked_sub(BURST).map_or(Duration::ZERO, |free| free.saturating_duration_since(now));
        (wait, due)
    }
}

impl Limiter {
    pub(crate) fn new(settings: LimitSettings, metrics: Arc<Metrics>) -> Limiter {
        Limiter { settings: RwLock::new(settings), apps: Mutex::new(HashMap::new()), metrics }
    }

    fn apps(&self) -> MutexGuard<'_, HashMap<String, Arc<App>>> {
        self.apps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes new settings (SIGHUP); each app's next admission and AUTH
    /// follow them (connections already open stay). Whether they changed.
    pub(crate) fn replace(&self, settings: LimitSettings) -> bool {
        let mut current = self.settings.write().unwrap_or_else(|e| e.into_inner());
        if *current == settings {
            return false;
        }
        for app in self.apps().values() {
            let mut rates = app.rates();
            rates.limits = settings.of(&app.key);
            rates.max_delay = settings.max_delay;
            app.rated.store(rates.limits.is_rated(), Ordering::SeqCst);
        }
        *current = settings;
        true
    }

    /// The app `key`, made at its first use.
    pub(crate) fn app(&self, key: &str) -> Arc<App> {
        let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
        self.apps()
            .entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(App {
                    key: key.to_owned(),
                    rated: AtomicBool::new(settings.of(key).is_rated()),
                    connections: AtomicU64::new(0),
                    subscribers: AtomicU64::new(0),
                    rates: Mutex::new(Rates {
                        limits: settings.of(key),
                        max_delay: settings.max_delay,
                        records: Pace::default(),
                        bytes: Pace::default(),
                    }),
                    metrics: self.metrics.clone(),
                })
            })
            .clone()
    }

    /// A connection of app `key` (a subscriber's when `subscriber`), if
    /// the app is within its connection limits; it counts until dropped.
    pub(crate) fn seat(&self, key: &str, subscriber: bool) -> Result<Seat, LimitError> {
        let app = self.app(key);
        let limits = app.rates().limits;
        // Counted first, then judged: two AUTHs at once cannot both take the last seat.
        let taken = |count: &AtomicU64, limit: Option<u64>| {
            let before = count.fetch_add(1, Ordering::SeqCst);
            match limit {
                Some(limit) if before >= limit => {
                    count.fetch_sub(1, Ordering::SeqCst);
                    Err(limit)
                }
                _ => Ok(()),
            }
        };
        let refused = |e: LimitError| {
            app.metrics.limit_refused(&app.key, e.limit());
            e
        };
        taken(&app.connections, limits.connections)
            .map_err(|limit| refused(LimitError::Connections { app: key.to_owned(), limit }))?;
        if subscriber {
            if let Err(limit) = taken(&app.subscribers, limits.subscribers) {
                app.connections.fetch_sub(1, Ordering::SeqCst);
                return Err(refused(LimitError::Subscribers { app: key.to_owned(), limit }));
            }
        }
        Ok(Seat { app, subscriber })
    }
}

impl App {
    fn rates(&self) -> MutexGuard<'_, Rates> {
        self.rates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the app has a publish rate (its records may be held).
    pub(crate) fn is_rated(&self) -> bool {
        self.rated.load(Ordering::Relaxed)
    }

    /// Admits `records` of `bytes` value bytes: the wait that keeps the app
    /// within its rates (zero when it is), or the limit it is over by more
    /// than the longest wait. A refused request leaves the rates as they were.
    pub(crate) fn admit(&self, records: u64, bytes: u64) -> Result<Duration, LimitError> {
        if !self.is_rated() {
            return Ok(Duration::ZERO);
        }
        let mut rates = self.rates();
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        let mut dues = [None, None];
        for (i, (pace, per_s, units, what)) in [
            (&rates.records, rates.limits.records_per_s, records, "records"),
            (&rates.bytes, rates.limits.bytes_per_s, bytes, "bytes"),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(per_s) = per_s else { continue };
            let (w, due) = pace.admit(now, units, per_s);
            if w > rates.max_delay {
                let refused = LimitError::Rate { app: self.key.clone(), what, limit: per_s };
                self.metrics.limit_refused(&self.key, refused.limit());
                return Err(refused);
            }
            wait = wait.max(w);
            dues[i] = Some(due);
        }
        if let Some(due) = dues[0] {
            rates.records.due = Some(due);
        }
        if let Some(due) = dues[1] {
            rates.bytes.due = Some(due);
        }
        if !wait.is_zero() {
            self.metrics.throttled(&self.key, wait);
        }
        Ok(wait)
    }

    /// [`App::admit`], then the wait itself, on the caller's thread. A
    /// refusal is held the longest wait too, as Kafka mutes a client over
    /// its quota: a client that keeps sending past its limit is paced by
    /// its refusals instead of spinning on them.
    pub(crate) fn throttle(&self, records: u64, bytes: u64) -> Result<(), LimitError> {
        let wait = match self.admit(records, bytes) {
            Ok(wait) => wait,
            Err(e) => {
                let hold = self.rates().max_delay;
                self.metrics.throttled(&self.key, hold);
                std::thread::sleep(hold);
                return Err(e);
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        Ok(())
    }
}

/// A connection counted against its app's limits until it is dropped.
pub(crate) struct Seat {
    app: Arc<App>,
    subscriber: bool,
}

impl Seat {
    pub(crate) fn app(&self) -> &Arc<App> {
        &self.app
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.app.connections.fetch_sub(1, Ordering::SeqCst);
        if self.subscriber {
            self.app.subscribers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn limiter(text: &str) -> Limiter {
        let raw: RawLimits = toml::from_str(text).unwrap();
        let settings = LimitSettings::from_raw(raw, Check { path: Path::new("t.toml") }).unwrap();
        Limiter::new(settings, Arc::new(Metrics::new()))
    }

    #[test]
    fn an_app_section_overrides_the_defaults_key_by_key() {
        let raw: RawLimits =
            toml::from_str("connections = 5\npublish_records_per_s = 100\n[apps.\"k2\"]\nconnections = 1\n")
                .unwrap();
        let s = LimitSettings::from_raw(raw, Check { path: Path::new("t.toml") }).unwrap();
        assert_eq!(
            s.of("k1"),
            AppLimits { records_per_s: Some(100), connections: Some(5), ..Default::default() }
        );
        assert_eq!(
            s.of("k2"),
            AppLimits { records_per_s: Some(100), connections: Some(1), ..Default::default() }
        );
        let raw: RawLimits = toml::from_str("[apps.\"k2\"]\nsubscribers = 0\n").unwrap();
        let e = LimitSettings::from_raw(raw, Check { path: Path::new("t.toml") }).unwrap_err();
        assert_eq!(e.key, "limits.apps.k2.subscribers");
    }

    #[test]
    fn connections_count_per_app_until_dropped() {
        let l = limiter("connections = 2\nsubscribers = 1\n");
        let a = l.seat("k", false).unwrap();
        let s = l.seat("k", true).unwrap();
        assert_eq!(l.seat("k", false).err(), Some(LimitError::Connections { app: "k".into(), limit: 2 }));
        assert!(l.seat("other", true).is_ok(), "another app counts apart");
        drop(a);
        assert_eq!(l.seat("k", true).err(), Some(LimitError::Subscribers { app: "k".into(), limit: 1 }));
        drop(s);
        let _two = (l.seat("k", true).unwrap(), l.seat("k", false).unwrap());
    }

    #[test]
    fn a_second_of_the_rate_goes_at_once_then_each_waits_its_share() {
        let l = limiter("publish_records_per_s = 100\nmax_delay_ms = 500\n");
        let app = l.app("k");
        for _ in 0..100 {
            assert_eq!(app.admit(1, 10).unwrap(), Duration::ZERO);
        }
        let wait = app.admit(1, 10).unwrap();
        assert!(wait > Duration::from_millis(5) && wait <= Duration::from_millis(11), "{wait:?}");
        // Fifty more would wait half a second past the burst: the 51st is refused.
        for _ in 0..48 {
            app.admit(1, 10).unwrap();
        }
        let refused = (0..5).find_map(|_| app.admit(1, 10).err());
        assert_eq!(refused, Some(LimitError::Rate { app: "k".into(), what: "records", limit: 100 }));
        assert!(l.app("other").admit(1, 1).unwrap().is_zero(), "each app its own rate");
    }

    #[test]
    fn bytes_count_apart_and_new_settings_apply_at_once() {
        let l = limiter("publish_bytes_per_s = 1000\nmax_delay_ms = 100\n");
        let app = l.app("k");
        assert_eq!(app.admit(1, 1000).unwrap(), Duration::ZERO);
        assert!(matches!(app.admit(1, 1000), Err(LimitError::Rate { what: "bytes", .. })));
        l.replace(LimitSettings::default());
        assert_eq!(app.admit(1, 1_000_000).unwrap(), Duration::ZERO);
    }
}
