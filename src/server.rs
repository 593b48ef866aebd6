//! The server loop: a `std::net` listener (and, when configured, a second
//! one for TLS) and one pooled worker thread per connection. Shutdown sets a
//! flag, wakes each `accept` with a self-connect, interrupts every open
//! connection (in-flight commands still get their replies), waits for the
//! workers and flushes the producers.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use threadpool::ThreadPool;

use crate::admin::{Admin, BindError};
use crate::auth::{self, file::FileStore, mysql::MysqlStore, redis::RedisStore, AuthStore};
use crate::config::{AuthSource, Settings};
use crate::kafka::{Clusters, Memberships, Producers};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::session::registry::Connections;
use crate::session::{self, CommandError, Context, Stream};
use crate::tls::{TlsAcceptor, TlsError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("auth store unreachable: {0}")]
    Store(#[from] auth::StoreError),
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: String, cause: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("admin port: {0}")]
    Admin(#[from] BindError),
}

/// A started server; dropping it does not stop it, [`Running::shutdown`] does.
pub struct Running {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    tls: Option<Arc<TlsAcceptor>>,
    stop: Arc<AtomicBool>,
    acceptors: Vec<thread::JoinHandle<()>>,
    refresher: Option<auth::Refresher>,
    producers: Arc<Producers>,
    clusters: Arc<Clusters>,
    limiter: Arc<Limiter>,
    /// The config file, re-read for its clusters and limits on SIGHUP.
    source: Option<PathBuf>,
    flush_timeout: Duration,
    admin: Option<Admin>,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin port's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::local_addr)
    }

    /// The TLS listener's address, when there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Re-reads the auth store, the TLS files and the clusters of the config
    /// file now, as SIGHUP asks. A TLS file that cannot be read leaves the
    /// certificates in use as they are, a config file that does not validate
    /// the clusters. A cluster whose settings changed (a rotated password, a
    /// new CA file) gets new producers and its new subscribers join with the
    /// new settings; records in flight and joined subscribers finish on the
    /// clients they have. Nothing else in the file is re-read.
    pub fn reload(&self) {
        if let Some(r) = &self.refresher {
            r.trigger();
        }
        if let Some(path) = &self.source {
            match Settings::load(path) {
                Ok(new) => {
                    if self.limiter.replace(new.app_limits) {
                        log::info!("config: [limits] re-read from {}", path.display());
                    }
                    let changed = self.clusters.replace(new.clusters);
                    if changed.is_empty() {
                        log::info!("config: clusters re-read from {}, none changed", path.display());
                    } else {
                        log::info!("config: clusters re-read from {}; changed: {changed:?}", path.display());
                        self.producers.reconfigured(&changed);
                    }
                }
                Err(e) => log::error!("config: keeping the clusters in use: {e}"),
            }
        }
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => log::info!("TLS: certificates re-read"),
                Err(e) => log::error!("TLS: keeping the certificates in use: {e}"),
            }
        }
    }

    /// Stops accepting, lets in-flight commands finish, flushes, and returns
    /// once every worker is done.
    pub fn shutdown(mut self) {
        if let Some(admin) = &self.admin {
            admin.draining();
        }
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept()s; each loop sees the flag and leaves.
        for addr in std::iter::once(self.addr).chain(self.tls_addr) {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
        for h in self.acceptors.drain(..) {
            let _ = h.join();
        }
        self.producers.flush(self.flush_timeout);
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        log::info!("databus stopped");
        if let Some(r) = self.refresher.take() {
            r.stop();
        }
    }
}

/// File descriptors databus keeps beside its clients': listeners, the
/// admin port, the auth store, the producers' broker connections and
/// librdkafka's own, as Redis keeps 32 beside `maxclients`.
const RESERVED_FDS: u64 = 128;
/// Each client connection: its socket, and the duplicate that watches for
/// a hang-up while an `MGET` waits.
const FDS_PER_CLIENT: u64 = 2;

/// Raises the soft open-file limit to the hard one, as Redis does at start,
/// and returns `max_clients`, lowered (and said so) if even that limit
/// cannot hold that many clients.
fn fit_to_open_files(max_clients: usize) -> usize {
    let before = match rlimit::Resource::NOFILE.get() {
        Ok((soft, _)) => soft,
        Err(e) => {
            log::warn!("cannot read the open-file limit ({e}); max_clients stays {max_clients}");
            return max_clients;
        }
    };
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            log::warn!("cannot raise the open-file limit from {before} ({e})");
            before
        }
    };
    if limit > before {
        log::info!("open-file limit raised from {before} to {limit}");
    }
    let fit = clients_within(limit);
    if fit >= max_clients {
        return max_clients;
    }
    log::warn!(
        "the open-file limit ({limit}) holds {fit} clients: max_clients lowered from {max_clients} to {fit} \
         (raise `ulimit -n`, or LimitNOFILE in the systemd unit, to serve more)"
    );
    fit
}

/// How many clients `limit` open files hold: at least one.
fn clients_within(limit: u64) -> usize {
    (limit.saturating_sub(RESERVED_FDS) / FDS_PER_CLIENT).clamp(1, usize::MAX as u64) as usize
}

pub(crate) fn open_store(source: &AuthSource) -> Result<Box<dyn AuthStore>, StartError> {
    match source {
        AuthSource::Mysql { url } => Ok(Box::new(MysqlStore::new(url.expose(), Duration::from_secs(5))?)),
        AuthSource::Redis { addr, db, password, timeout } => {
            Ok(Box::new(RedisStore::new(addr, *db, password.as_ref().map(Secret::expose), *timeout)?))
        }
        AuthSource::File { path } => Ok(Box::new(FileStore::new(path))),
    }
}

/// Loads the auth store, binds the listener and starts serving.
pub fn start(mut settings: Settings) -> Result<Running, StartError> {
    settings.max_clients = fit_to_open_files(settings.max_clients);
    let settings = Arc::new(settings);
    let metrics = Arc::new(Metrics::new());
    let mut store = open_store(&settings.auth)?;
    let cache = Arc::new(auth::initial_load(store.as_mut())?);
    metrics.refreshed(cache.snapshot().len());

    let bind = |addr: &str| {
        let listener = listen(addr, settings.listen_backlog)
            .map_err(|cause| StartError::Bind { addr: addr.to_owned(), cause })?;
        let local =
            listener.local_addr().map_err(|cause| StartError::Bind { addr: addr.to_owned(), cause })?;
        Ok::<_, StartError>((listener, local))
    };
    let (listener, addr) = bind(&settings.addr)?;
    log::info!("databus listening on {addr}");
    let tls = match &settings.tls {
        None => None,
        Some(t) => {
            let acceptor = Arc::new(TlsAcceptor::new(t.clone())?);
            let (listener, local) = bind(&t.addr)?;
            log::info!("databus listening for TLS on {local}");
            Some((listener, local, acceptor))
        }
    };

    let clusters = Arc::new(Clusters::new(settings.clusters.clone()));
    let producers = Arc::new(Producers::new(clusters.clone(), settings.producer.clone()));
    let connections = Arc::new(Connections::default());
    let refresher = {
        let (connections, producers) = (connections.clone(), producers.clone());
        let metrics = metrics.clone();
        auth::spawn_refresher(store, cache.clone(), settings.refresh_interval, metrics, move |changes| {
            if !changes.groups.is_empty() {
                let closed = connections.interrupt_groups(&changes.groups);
                let mut groups: Vec<&String> = changes.groups.iter().collect();
                groups.sort();
                log::info!("auth: grants of {groups:?} changed; closing {closed} connections");
            }
            producers.retain(&changes.clusters_in_use);
        })
    };
    let limiter = Arc::new(Limiter::new(settings.app_limits.clone(), metrics.clone()));
    let ctx = Arc::new(Context {
        settings: settings.clone(),
        clusters: clusters.clone(),
        auth: cache,
        kafka: producers.clone(),
        members: Arc::new(Memberships::default()),
        queues: Arc::default(),
        limiter: limiter.clone(),
        metrics,
    });
    let admin = match &settings.admin {
        None => None,
        Some(a) => Some(Admin::start(a, ctx.clone(), producers.clone())?),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |name: &str, listener: TcpListener, tls: Option<Arc<TlsAcceptor>>| {
        let (ctx, connections, stop) = (ctx.clone(), connections.clone(), stop.clone());
        thread::Builder::new()
            .name(name.into())
            .spawn(move || accept_loop(listener, tls, ctx, &connections, &stop))
            .expect("spawn acceptor")
    };
    let mut acceptors = vec![spawn("accept", listener, None)];
    let (tls_addr, tls) = match tls {
        None => (None, None),
        Some((listener, local, acceptor)) => {
            acceptors.push(spawn("accept-tls", listener, Some(acceptor.clone())));
            (Some(local), Some(acceptor))
        }
    };
    Ok(Running {
        limiter,
        addr,
        tls_addr,
        tls,
        stop,
        acceptors,
        refresher: Some(refresher),
        producers,
        clusters,
        source: settings.source.clone(),
        flush_timeout: settings.producer.timeout,
        admin,
    })
}

/// A listening socket with room for `backlog` connections not yet accepted
/// (std's `bind` asks for 128), so a crowd of clients reconnecting after a
/// restart is queued rather than dropped. The kernel caps it at
/// `net.core.somaxconn`.
fn listen(addr: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no address"))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// Accepts until `stop`, serving each connection on a pooled worker; with
/// `tls`, each is TLS over the accepted socket.
fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<TlsAcceptor>>,
    ctx: Arc<Context>,
    connections: &Arc<Connections>,
    stop: &AtomicBool,
) {
    let settings = ctx.settings.clone();
    // Grown on demand: threadpool starts every thread up front, and most
    // deployments never come near max_clients.
    let mut pool = threadpool::Builder::new()
        .num_threads(16.min(settings.max_clients))
        .thread_name("conn".into())
        .thread_stack_size(settings.thread_stack_size)
        .build();
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, typically; back off instead of spinning.
                log::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let Some(registration) = connections.add(&stream, settings.max_clients) else {
            let mut reply = Vec::new();
            CommandError::MaxClients.to_frame().encode(&mut reply);
            ctx.metrics.refused("max_clients", "");
            let _ = stream.write_all(&reply);
            continue;
        };
        let stream = match &tls {
            None => Stream::Plain(Arc::new(stream)),
            Some(tls) => match Stream::tls(stream, tls.config()) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("TLS: cannot start a session: {e}");
                    continue;
                }
            },
        };
        grow(&mut pool, connections.len(), settings.max_clients);
        let ctx = ctx.clone();
        pool.execute(move || session::serve(stream, ctx, registration));
    }
    connections.interrupt_all();
    pool.join();
    // The queue groups commit what their consumers acknowledged, and leave.
    ctx.queues.close_all();
}

/// Makes sure there is a thread for every open connection, doubling so that
/// growth is rare.
fn grow(pool: &mut ThreadPool, open: usize, max: usize) {
    if open > pool.max_count() {
        pool.set_num_threads((pool.max_count() * 2).clamp(open, max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_fit_the_files_left_beside_databus_own() {
        assert_eq!(clients_within(1024), 448);
        assert_eq!(clients_within(200), 36);
        assert_eq!(clients_within(100), 1, "at least one");
        assert_eq!(clients_within(u64::MAX), ((u64::MAX - 128) / 2).min(usize::MAX as u64) as usize);
    }
}
