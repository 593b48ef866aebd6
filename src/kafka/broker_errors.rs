//! What librdkafka says about one client's connections to the brokers, kept
//! for the replies and the log:
//!
//! - the latest error, so that a timeout or a failed join says why;
//! - whether the brokers **refused** the client (its SASL login, or the TLS
//!   handshake: an untrusted or wrong certificate). Retrying the same
//!   settings cannot pass, so publishers and joins answer at once instead
//!   of waiting out their timeouts;
//! - its log lines, of which one that repeats (from any client: each
//!   subscriber has its own) is logged once and then summarised (how often
//!   since, and the latest) at most every [`SUMMARY_EVERY`], so that a
//!   cluster that stays unreachable does not flood the log. librdkafka
//!   itself reports an identical connection failure of one client once per
//!   30 s; what it repeats meanwhile is "all brokers down", which is logged
//!   here with the failure that brought them down.
//!
//! librdkafka redacts passwords in what it logs; nothing here adds one.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// ` (last broker error: ...)`, when librdkafka said why it cannot reach
/// the cluster: a wrong SASL password, an untrusted certificate, a refused
/// connection.
pub(crate) fn because(cause: &Option<String>) -> String {
    cause.as_ref().map(|c| format!(" (last broker error: {c})")).unwrap_or_default()
}

/// The least time between two log lines of the same repeating failure.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(crate) struct BrokerErrors(Mutex<State>);

#[derive(Default)]
struct State {
    last: Option<String>,
    /// When the brokers last refused this client, and what they said.
    refused: Option<(Instant, String)>,
}

/// A repeating log line: when it was last written, and what came since.
struct Repeats {
    written: Instant,
    since: usize,
}

impl BrokerErrors {
    /// An error librdkafka reported (its error callback): logged (at warn,
    /// throttled), kept, and `true` when it is a refusal.
    pub(crate) fn record(&self, error: &KafkaError, reason: &str) -> bool {
        let why = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => because(&self.get()),
            _ => String::new(),
        };
        throttled(log::Level::Warn, &format!("librdkafka: {error}: {reason}{why}"));
        self.keep(error, reason)
    }

    /// As [`BrokerErrors::record`], without logging it.
    pub(crate) fn keep(&self, error: &KafkaError, reason: &str) -> bool {
        let text = if reason.is_empty() { error.to_string() } else { reason.to_owned() };
        let code = error.rdkafka_error_code();
        // An SSL error may be a broker going away mid-handshake: only its
        // text tells a certificate refused from that.
        let refusal = code == Some(RDKafkaErrorCode::Authentication) || is_refusal(&text);
        let mut state = self.lock();
        // "All brokers down" says less than the error that brought them down,
        // so it never replaces one.
        if code != Some(RDKafkaErrorCode::AllBrokersDown) || state.last.is_none() {
            state.last = Some(text.clone());
        }
        if refusal {
            state.refused = Some((Instant::now(), text));
        }
        refusal
    }

    /// A librdkafka log line (its log callback): forwarded to `log` at the
    /// matching level, throttled; one that reports a failed connection
    /// (facility `FAIL`) is kept, which is how a client that is not polled
    /// yet learns why. `true` when it reports a refusal.
    pub(crate) fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) -> bool {
        let level = match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => log::Level::Error,
            RDKafkaLogLevel::Warning => log::Level::Warn,
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => log::Level::Info,
            RDKafkaLogLevel::Debug => log::Level::Debug,
        };
        if level == log::Level::Debug {
            // The operator asked for librdkafka's debug contexts: all of it.
            log::log!(target: "librdkafka", level, "librdkafka: {fac} {message}");
        } else {
            throttled(level, &format!("librdkafka: {fac} {message}"));
        }
        if fac != "FAIL" {
            return false;
        }
        let mut state = self.lock();
        state.last = Some(message.to_owned());
        let refusal = is_refusal(message);
        if refusal {
            state.refused = Some((Instant::now(), message.to_owned()));
        }
        refusal
    }

    /// An error of databus's own producer: logged (at warn, throttled) and kept.
    pub(crate) fn note(&self, error: &str) {
        throttled(log::Level::Warn, &format!("producer: {error}"));
        self.lock().last = Some(error.to_owned());
    }

    /// The latest error, if any.
    pub(crate) fn get(&self) -> Option<String> {
        self.lock().last.clone()
    }

    /// What the brokers said when they last refused this client, if that
    /// was at or after `since`.
    pub(crate) fn refused_since(&self, since: Instant) -> Option<String> {
        self.lock().refused.as_ref().filter(|(at, _)| *at >= since).map(|(_, why)| why.clone())
    }

    /// The latest refusal, however old.
    pub(crate) fn refusal(&self) -> Option<String> {
        self.lock().refused.as_ref().map(|(_, why)| why.clone())
    }

    /// The brokers served this client (a record delivered): any refusal is
    /// over.
    pub(crate) fn accepted(&self) {
        self.lock().refused = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes `line`, unless the same failure was written less than
/// [`SUMMARY_EVERY`] ago: then it is counted, and the next line written says
/// how many came in between.
fn throttled(level: log::Level, line: &str) {
    static REPEATS: OnceLock<Mutex<Repeated>> = OnceLock::new();
    let mut repeats = REPEATS.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    repeats.write(level, line, Instant::now());
}

/// The repeating log lines of the process, by [`repeat_key`].
#[derive(Default)]
struct Repeated(HashMap<String, Repeats>);

impl Repeated {
    fn write(&mut self, level: log::Level, line: &str, now: Instant) {
        let key = repeat_key(line);
        match self.0.get_mut(&key) {
            Some(r) if now.saturating_duration_since(r.written) < SUMMARY_EVERY => r.since += 1,
            Some(r) => {
                let since = std::mem::take(&mut r.since);
                let secs = now.saturating_duration_since(r.written).as_secs();
                r.written = now;
                if since > 0 {
                    log::log!(target: "librdkafka", level, "{line} (and {since} more like it in the last {secs} s)");
                } else {
                    log::log!(target: "librdkafka", level, "{line}");
                }
            }
            None => {
                // Bounded: the process sees few distinct failures, but never
                // let a pathological stream of them grow the map for ever.
                if self.0.len() >= 256 {
                    self.0.clear();
                }
                self.0.insert(key, Repeats { written: now, since: 0 });
                log::log!(target: "librdkafka", level, "{line}");
            }
        }
    }
}

/// Whether librdkafka's text says the brokers refused the client: its SASL
/// login, the broker's certificate (untrusted, or for another host), or the
/// client's certificate (the broker's TLS alert). A handshake cut short (a
/// broker restarting) is no refusal.
fn is_refusal(text: &str) -> bool {
    const REFUSALS: &[&str] = &[
        "SASL authentication error",
        "SASL authentication failed",
        "certificate verify failed",
        "alert bad certificate",
        "alert unknown ca",
        "alert certificate required",
        "alert certificate unknown",
        "alert certificate revoked",
        "alert certificate expired",
    ];
    REFUSALS.iter().any(|needle| text.contains(needle))
}

/// What makes two log lines "the same failure": the text without the parts
/// librdkafka varies from one to the next (timings, suppressed counts) and
/// without digits (ports, broker ids).
fn repeat_key(line: &str) -> String {
    let line = line.split(" (after ").next().unwrap_or(line);
    line.chars().filter(|c| !c.is_ascii_digit()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SASL: &str =
        "sasl_ssl://127.0.0.1:45567/bootstrap: SASL authentication error: Authentication failed \
                        during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 \
                        (after 346ms in state AUTH_REQ, 1 identical error(s) suppressed)";

    #[test]
    fn a_refused_login_is_a_refusal_and_is_kept() {
        let e = BrokerErrors::default();
        let before = Instant::now();
        assert!(e.log(RDKafkaLogLevel::Error, "FAIL", SASL));
        assert_eq!(e.refused_since(before).as_deref(), Some(SASL));
        assert_eq!(e.get().as_deref(), Some(SASL));
        assert!(e.refusal().is_some());
        e.accepted();
        assert_eq!(e.refusal(), None);
        assert_eq!(e.get().as_deref(), Some(SASL), "the last error stays for the replies");
    }

    #[test]
    fn a_refusal_from_the_error_callback_counts_too() {
        let e = BrokerErrors::default();
        assert!(e.record(&KafkaError::Global(RDKafkaErrorCode::Authentication), "bad login"));
        let untrusted =
            "ssl://b:9093/1: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed";
        assert!(e.record(&KafkaError::Global(RDKafkaErrorCode::SSL), untrusted));
        assert_eq!(e.refusal().as_deref(), Some(untrusted));
    }

    #[test]
    fn a_handshake_cut_short_is_no_refusal() {
        let e = BrokerErrors::default();
        let reset =
            "sasl_ssl://127.0.0.1:37041/1: SSL handshake failed: Disconnected: connection reset by peer: \
                     connecting to a PLAINTEXT broker listener? (after 0ms in state SSL_HANDSHAKE)";
        assert!(!e.record(&KafkaError::Global(RDKafkaErrorCode::SSL), reset));
        assert!(!e.log(RDKafkaLogLevel::Error, "FAIL", reset));
        assert_eq!(e.refusal(), None);
    }

    #[test]
    fn a_refused_connection_is_no_refusal() {
        let e = BrokerErrors::default();
        let down = "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused (after 0ms in state CONNECT)";
        assert!(!e.log(RDKafkaLogLevel::Error, "FAIL", down));
        assert!(!e.record(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "1/1 brokers are down"));
        assert_eq!(e.refusal(), None);
        assert_eq!(e.get().as_deref(), Some(down), "all brokers down says less than why");
    }

    #[test]
    fn repeats_of_one_failure_share_a_key_others_do_not() {
        let other = SASL.replace("45567", "9093").replace("346ms", "12ms");
        assert_eq!(repeat_key(SASL), repeat_key(&other));
        assert_ne!(repeat_key(SASL), repeat_key("127.0.0.1:9/bootstrap: Connect failed: Connection refused"));
    }

    #[test]
    fn a_repeating_line_is_counted_until_its_summary_is_due() {
        let mut repeats = Repeated::default();
        let start = Instant::now();
        for i in 0..5 {
            repeats.write(log::Level::Error, SASL, start + Duration::from_millis(i * 100));
        }
        assert_eq!(repeats.0[&repeat_key(SASL)].since, 4, "written once, the other four counted");
        // Due: the next one is written with the count, and counting restarts.
        repeats.write(log::Level::Error, SASL, start + SUMMARY_EVERY);
        assert_eq!(repeats.0[&repeat_key(SASL)].since, 0);
        assert_eq!(repeats.0[&repeat_key(SASL)].written, start + SUMMARY_EVERY);
    }
}
