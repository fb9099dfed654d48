//! The S3 endpoint: the pool's buckets and keys over the S3 HTTP API, from
//! the mounting daemon (`shardfs mount --s3-listen ADDR --s3-keys FILE`).
//!
//! `s3s` parses requests, checks SigV4 signatures against the keys file
//! ([`keys`]) and renders responses; [`service`] maps each operation onto
//! [`store`], which makes every change through the same `Fs` calls as the
//! FUSE glue and tells the kernel's caches about it. The server runs on a
//! small tokio runtime of its own threads (`s3-*`), started once the mount
//! is up and stopped before the final sync at unmount. docs/S3.md has the
//! whole story.

pub mod keys;
pub mod multipart;
pub mod service;
pub mod store;

pub use store::Invalidate;

use crate::fs::Fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Options of the endpoint (`--s3-listen`, `--s3-keys`, `--s3-allow-remote`).
#[derive(Debug, Clone)]
pub struct S3Options {
    /// where to listen
    pub listen: SocketAddr,
    /// the keys file
    pub keys: PathBuf,
    /// accept a non-loopback listen address (plain HTTP: put TLS in front)
    pub allow_remote: bool,
    /// multipart uploads older than this are removed
    pub upload_expiry: Duration,
}

/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 256;
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Most request headers.
const MAX_HEADERS: usize = 100;
/// The request head must arrive within this long.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest XML request body (DeleteObjects of 1000 keys of 1 KiB fits).
const MAX_XML_BODY: usize = 4 << 20;
/// Bytes of an oversized XML body read (and dropped) before the answer.
const MAX_DRAINED: usize = 64 << 20;
/// How long in-flight requests may finish at unmount.
const DRAIN: Duration = Duration::from_secs(5);

/// A bound listener and checked keys: what the mount needs before it
/// starts, so that a bad address or keys file fails it early.
#[derive(Debug)]
pub struct Prepared {
    listener: std::net::TcpListener,
    keys: Arc<keys::Keys>,
    upload_expiry: Duration,
}

impl Prepared {
    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Check the options, read the keys and bind the listener.
pub fn prepare(o: &S3Options) -> Result<Prepared, String> {
    if !o.allow_remote && !o.listen.ip().to_canonical().is_loopback() {
        return Err(format!(
            "--s3-listen {}: the S3 endpoint listens on a loopback address unless \
             --s3-allow-remote is given (it speaks plain HTTP: put a TLS proxy in front)",
            o.listen
        ));
    }
    let keys = Arc::new(keys::Keys::load(&o.keys)?);
    let listener = std::net::TcpListener::bind(o.listen)
        .map_err(|e| format!("--s3-listen {}: {e}", o.listen))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("--s3-listen {}: {e}", o.listen))?;
    Ok(Prepared {
        listener,
        keys,
        upload_expiry: o.upload_expiry,
    })
}

/// The running endpoint.
#[derive(Debug)]
pub struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// where it listens
    pub addr: SocketAddr,
}

impl Server {
    /// Stop accepting, let requests in flight finish (up to 5 s), and stop
    /// the runtime. Staged uploads cut off are removed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Build the s3s service over `fs`.
pub fn s3_service(
    fs: Arc<Fs>,
    keys: Arc<keys::Keys>,
    inval: Option<Box<dyn Invalidate>>,
) -> (s3s::service::S3Service, Arc<store::Store>) {
    let store = Arc::new(store::Store::new(fs, inval));
    let svc = service::Service::new(store.clone(), keys.clone());
    let mut b = s3s::service::S3ServiceBuilder::new(svc);
    b.set_auth(keys::Auth(keys.clone()));
    b.set_access(keys::Access(keys));
    let mut cfg = s3s::config::S3Config::default();
    cfg.xml_max_body_size = MAX_XML_BODY;
    b.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        cfg,
    ))));
    (b.build(), store)
}

/// Start serving on a runtime of its own threads. Leftovers of a crash in
/// the staging directory are removed first.
pub fn start(
    p: Prepared,
    fs: Arc<Fs>,
    inval: Option<Box<dyn Invalidate>>,
) -> Result<Server, String> {
    let addr = p.local_addr().map_err(|e| format!("S3 listener: {e}"))?;
    let (svc, store) = s3_service(fs, p.keys.clone(), inval);
    match store.sweep_staging() {
        Ok(0) => {}
        Ok(n) => log::info!("S3: removed {n} staged uploads left by the last stop"),
        Err(e) => log::warn!("S3: staging directory not swept: {e:?}"),
    }
    let expiry = p.upload_expiry;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(32)
        .thread_name("s3-worker")
        .enable_all()
        .build()
        .map_err(|e| format!("S3 runtime: {e}"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let listener = p.listener;
    let thread = std::thread::Builder::new()
        .name("s3".into())
        .spawn(move || {
            rt.block_on(async move {
                // expire old multipart uploads now and then, beside serving
                let expirer = tokio::spawn(expire(store, expiry));
                serve(listener, svc, rx).await;
                expirer.abort();
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        })
        .map_err(|e| format!("S3 thread: {e}"))?;
    log::info!("S3 endpoint at http://{addr} ({} keys)", p.keys.len());
    Ok(Server {
        stop: Some(tx),
        thread: Some(thread),
        addr,
    })
}

/// s3s's service, closing the connection after an error answered to a
/// request whose body may not have been read: the unread bytes would
/// otherwise be taken for the next request on the connection.
#[derive(Clone)]
struct CloseOnError(s3s::service::S3Service);

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for CloseOnError {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let has_body = req.headers().contains_key(hyper::header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        // an XML body over the bound: s3s 0.14.1 answers it InternalError,
        // S3 answers MaxMessageLengthExceeded (every POST S3 operation we
        // serve takes XML: DeleteObjects, multipart create and complete)
        let too_big = req.method() == hyper::Method::POST
            && req
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|n| n > MAX_XML_BODY);
        if too_big {
            let e = s3s::S3Error::with_message(
                s3s::S3ErrorCode::MaxMessageLengthExceeded,
                format!("Your request was too big (XML bodies are at most {MAX_XML_BODY} bytes)."),
            );
            let mut body = req.into_body();
            return Box::pin(async move {
                // read what the client sends (up to a bound) so that it sees
                // the answer rather than a reset
                let mut seen = 0usize;
                while seen <= MAX_DRAINED {
                    let frame = futures::future::poll_fn(|cx| {
                        hyper::body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)
                    })
                    .await;
                    match frame {
                        Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
                        _ => break,
                    }
                }
                let mut resp = e.to_http_response().map_err(|e| {
                    s3s::HttpError::new(Box::new(std::io::Error::other(e.to_string())))
                })?;
                resp.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
                Ok(resp)
            });
        }
        let fut = hyper::service::Service::call(&self.0, req);
        Box::pin(async move {
            let mut resp = fut.await?;
            if has_body && (resp.status().is_client_error() || resp.status().is_server_error()) {
                resp.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            Ok(resp)
        })
    }
}

/// How often old multipart uploads are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);

async fn expire(store: Arc<store::Store>, max_age: Duration) {
    loop {
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.expire_uploads(max_age)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => log::info!("S3: removed {n} multipart uploads older than {max_age:?}"),
            Ok(Err(e)) => log::warn!("S3: multipart uploads not expired: {e:?}"),
            Err(e) => log::warn!("S3: multipart expiry: {e}"),
        }
        tokio::time::sleep(EXPIRE_EVERY.min(max_age.max(Duration::from_secs(1)))).await;
    }
}

async fn serve(
    listener: std::net::TcpListener,
    svc: s3s::service::S3Service,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("S3 listener: {e}");
            return;
        }
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (conn, _) = tokio::select! {
            _ = &mut stop => break,
            c = listener.accept() => match c {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("S3 accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = conn.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(conn);
        let mut b = hyper::server::conn::http1::Builder::new();
        b.max_buf_size(MAX_HEAD)
            .max_headers(MAX_HEADERS)
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT);
        let conn = graceful.watch(b.serve_connection(io, CloseOnError(svc.clone())));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                log::debug!("S3 connection: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    // idle connections close now, requests in flight get DRAIN to finish
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => {
            log::warn!("S3: connections still busy {DRAIN:?} after the unmount began were cut off");
        }
    }
}
