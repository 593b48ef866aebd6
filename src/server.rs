//! The server loop: a `std::net` listener and one pooled worker thread per
//! connection. Shutdown sets a flag, wakes `accept` with a self-connect,
//! closes the read side of every open connection (so in-flight commands still
//! get their replies), waits for the workers and flushes the producers.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use threadpool::ThreadPool;

use crate::auth::{self, mysql::MysqlStore, AuthStore};
use crate::config::{AuthSource, Settings};
use crate::kafka::{Memberships, Producers};
use crate::session::{self, Context};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("auth store unreachable: {0}")]
    Store(#[from] auth::StoreError),
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: String, cause: std::io::Error },
    #[error("auth store '{0}' is not supported yet")]
    Unsupported(&'static str),
}

/// Open connections, so shutdown can reach them.
#[derive(Default)]
struct Registry {
    next_id: AtomicUsize,
    open: Mutex<HashMap<usize, TcpStream>>,
}

impl Registry {
    fn add(&self, stream: &TcpStream) -> usize {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            self.open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, clone);
        }
        id
    }

    fn remove(&self, id: usize) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn close_reads(&self) {
        for stream in self.open.lock().unwrap_or_else(|e| e.into_inner()).values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
    }
}

/// A started server; dropping it does not stop it, [`Running::shutdown`] does.
pub struct Running {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
    refresher: Option<thread::JoinHandle<()>>,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight commands finish, flushes, and returns
    /// once every worker is done.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); the loop sees the flag and leaves.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
    }
}

fn open_store(source: &AuthSource) -> Result<Box<dyn AuthStore>, StartError> {
    match source {
        AuthSource::Mysql { url } => Ok(Box::new(MysqlStore::new(url, Duration::from_secs(5))?)),
        AuthSource::Redis { .. } => Err(StartError::Unsupported("redis")),
    }
}

/// Loads the auth store, binds the listener and starts serving.
pub fn start(settings: Settings) -> Result<Running, StartError> {
    let settings = Arc::new(settings);
    let mut store = open_store(&settings.auth)?;
    let cache = Arc::new(auth::initial_load(store.as_mut())?);
    let stop = Arc::new(AtomicBool::new(false));
    let refresher = auth::spawn_refresher(store, cache.clone(), settings.refresh_interval, stop.clone());

    let listener = TcpListener::bind(&settings.addr).map_err(|cause| StartError::Bind {
        addr: settings.addr.clone(),
        cause,
    })?;
    let addr = listener.local_addr().map_err(|cause| StartError::Bind {
        addr: settings.addr.clone(),
        cause,
    })?;
    log::info!("databus listening on {addr}");

    let producers = Arc::new(Producers::new(
        settings.clusters.clone(),
        settings.producer.clone(),
    ));
    let ctx = Arc::new(Context {
        settings: settings.clone(),
        auth: cache,
        kafka: producers.clone(),
        members: Arc::new(Memberships::default()),
        stop: stop.clone(),
    });
    let acceptor = {
        let stop = stop.clone();
        thread::Builder::new()
            .name("accept".into())
            .spawn(move || {
                accept_loop(listener, ctx, &stop);
                producers.flush(settings.producer.timeout);
                log::info!("databus stopped");
            })
            .expect("spawn acceptor")
    };
    Ok(Running {
        addr,
        stop,
        acceptor: Some(acceptor),
        refresher: Some(refresher),
    })
}

fn accept_loop(listener: TcpListener, ctx: Arc<Context>, stop: &AtomicBool) {
    let settings = ctx.settings.clone();
    // Grown on demand: threadpool starts every thread up front, and most
    // deployments never come near max_clients.
    let mut pool = threadpool::Builder::new()
        .num_threads(16.min(settings.max_clients))
        .thread_name("conn".into())
        .thread_stack_size(settings.thread_stack_size)
        .build();
    let registry = Arc::new(Registry::default());
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
        if registry.len() >= settings.max_clients {
            let _ = stream.write_all(b"-ERR max number of clients reached\r\n");
            continue;
        }
        let id = registry.add(&stream);
        grow(&mut pool, registry.len(), settings.max_clients);
        let (ctx, registry) = (ctx.clone(), registry.clone());
        pool.execute(move || {
            session::serve(stream, ctx);
            registry.remove(id);
        });
    }
    registry.close_reads();
    pool.join();
}

/// Makes sure there is a thread for every open connection, doubling so that
/// growth is rare.
fn grow(pool: &mut ThreadPool, open: usize, max: usize) {
    if open > pool.max_count() {
        pool.set_num_threads((pool.max_count() * 2).clamp(open, max));
    }
}
