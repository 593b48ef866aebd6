//! The admin port, for operators and their tools, never the RESP port: a
//! small blocking HTTP server (`tiny_http`, a few worker threads) with
//!
//! - `GET /metrics`: Prometheus text format ([`crate::metrics`]);
//! - `GET /health`: 200 while the process serves;
//! - `GET /ready`: 200 when the grants are loaded, the RESP listener is
//!   bound and every cluster a grant uses answered metadata recently, else
//!   503 with a JSON body naming what is missing;
//! - `POST /databus/pub`: publishing over HTTP ([`publish`]).

mod publish;

use std::collections::BTreeSet;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use tiny_http::{Header, Method, Request, Response, Server};

use crate::config::AdminSettings;
use crate::kafka::probe::Probe;
use crate::kafka::Producers;
use crate::session::Context;

/// Requests served at once; the rest wait in the listener's queue.
const WORKERS: usize = 4;

/// The running admin server.
pub(crate) struct Admin {
    server: Arc<Server>,
    addr: SocketAddr,
    workers: Vec<thread::JoinHandle<()>>,
    state: Arc<State>,
}

struct State {
    ctx: Arc<Context>,
    producers: Arc<Producers>,
    probe: Probe,
    max_body: usize,
    /// Cleared when shutdown begins, so a load balancer drains this instance.
    serving: AtomicBool,
    stopping: AtomicBool,
    /// Spreads HTTP publish requests over the producers' lanes.
    next_lane: AtomicUsize,
}

/// Why the admin port could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {cause}")]
pub struct BindError {
    pub addr: String,
    #[source]
    pub cause: Box<dyn std::error::Error + Send + Sync>,
}

impl Admin {
    /// Binds `settings.addr`, starts probing the clusters in use, and serves.
    pub(crate) fn start(
        settings: &AdminSettings,
        ctx: Arc<Context>,
        producers: Arc<Producers>,
    ) -> Result<Admin, BindError> {
        let server =
            Server::http(&settings.addr).map_err(|cause| BindError { addr: settings.addr.clone(), cause })?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| BindError { addr: settings.addr.clone(), cause: "not an IP address".into() })?;
        let server = Arc::new(server);
        // The probe skips a cluster the grants name but the config lacks.
        let auth = ctx.auth.clone();
        let in_use = move || auth.snapshot().clusters();
        let probe = Probe::spawn(ctx.clusters.clone(), in_use, settings.interval, ctx.metrics.clone());
        let state = Arc::new(State {
            ctx,
            producers,
            probe,
            max_body: settings.max_body,
            serving: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            next_lane: AtomicUsize::new(0),
        });
        let workers = (0..WORKERS)
            .map(|_| {
                let (server, state) = (server.clone(), state.clone());
                thread::Builder::new()
                    .name("admin".into())
                    .spawn(move || {
                        while !state.stopping.load(Ordering::SeqCst) {
                            match server.recv() {
                                Ok(request) => state.serve(request),
                                Err(e) if !state.stopping.load(Ordering::SeqCst) => {
                                    log::warn!("admin: {e}")
                                }
                                Err(_) => {}
                            }
                        }
                    })
                    .expect("spawn admin worker")
            })
            .collect();
        log::info!("admin (metrics, health, HTTP publish) listening on {addr}");
        Ok(Admin { server, addr, workers, state })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on `/ready` answers 503: the process is shutting down.
    pub(crate) fn draining(&self) {
        self.state.serving.store(false, Ordering::SeqCst);
    }

    /// Stops serving; requests being answered finish first.
    pub(crate) fn stop(self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            self.server.unblock();
        }
        for w in self.workers {
            let _ = w.join();
        }
        match Arc::try_unwrap(self.state) {
            Ok(state) => state.probe.stop(),
            Err(_) => log::debug!("admin: state still shared at stop"),
        }
    }
}

type Reply = Response<Cursor<Vec<u8>>>;

impl State {
    fn serve(&self, mut request: Request) {
        let path = request.url().split('?').next().unwrap_or_default().to_owned();
        let reply = match (request.method(), path.as_str()) {
            (Method::Get | Method::Head, "/health") => text(200, "ok\n"),
            (Method::Get | Method::Head, "/ready") => self.ready(),
            (Method::Get | Method::Head, "/metrics") => self.metrics(),
            (Method::Post, "/databus/pub") => {
                let lane = self.next_lane.fetch_add(1, Ordering::Relaxed);
                publish::handle(&mut request, &self.ctx, self.max_body, lane)
            }
            (_, "/health" | "/ready" | "/metrics" | "/databus/pub") => {
                json(405, &serde_json::json!({"error": "method not allowed"}))
            }
            _ => json(404, &serde_json::json!({"error": "not found"})),
        };
        if let Err(e) = request.respond(reply) {
            log::debug!("admin: writing a reply: {e}");
        }
    }

    fn ready(&self) -> Reply {
        let snapshot = self.ctx.auth.snapshot();
        let (in_use, unconfigured): (BTreeSet<String>, BTreeSet<String>) =
            snapshot.clusters().into_iter().partition(|c| self.ctx.clusters.contains(c));
        let mut missing = Vec::new();
        if !self.serving.load(Ordering::SeqCst) {
            missing.push("shutting down: the RESP listener no longer accepts".to_owned());
        }
        missing.extend(self.probe.missing(&in_use));
        let body = serde_json::json!({
            "ready": missing.is_empty(),
            "grants": snapshot.len(),
            "clusters": in_use,
            "unconfigured_clusters": unconfigured,
            "missing": missing,
        });
        json(if missing.is_empty() { 200 } else { 503 }, &body)
    }

    fn metrics(&self) -> Reply {
        let metrics = &self.ctx.metrics;
        metrics.set_members(&self.ctx.members.counts());
        metrics.set_queue_depths(&self.producers.queue_depths());
        metrics.set_produce_counts(&self.producers.produce_stats());
        let mut reply = text(200, &metrics.render());
        reply.add_header(header("Content-Type", "text/plain; version=0.0.4; charset=utf-8"));
        reply
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

fn text(status: u16, body: &str) -> Reply {
    Response::from_string(body).with_status_code(status)
}

fn json(status: u16, body: &serde_json::Value) -> Reply {
    Response::from_data(body.to_string().into_bytes())
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"))
}
