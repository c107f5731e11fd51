//! Connection limits for both servers: a cap on open connections (at the cap, the oldest idle
//! one is closed to make room), deadlines for a connection's first request and for idleness,
//! calls in flight counted per connection, and the file-descriptor limit raised at start-up.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// What one server allows its connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections open at once.
    pub(crate) max_connections: usize,
    /// Time a new connection has until its first call starts.
    pub(crate) header_timeout: Duration,
    /// Time a connection with no call in flight stays open.
    pub(crate) idle_timeout: Duration,
    /// TCP keep-alive probes after this much silence, if any.
    pub(crate) tcp_keepalive: Option<Duration>,
}

/// The open connections of one server.
#[derive(Clone)]
pub(crate) struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    name: &'static str,
    limits: Limits,
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// A connection closed or went idle: an accept waiting for room may go on.
    changed: Notify,
}

/// One connection's state, shared by its IO and its calls.
struct Conn {
    accepted: Instant,
    in_flight: AtomicUsize,
    served: AtomicBool,
    last_done: Mutex<Instant>,
    /// Fired to close the connection (evicted to make room).
    close: CancellationToken,
}

impl Conn {
    /// When the connection is to be closed if nothing happens: none while a call is in flight.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            None
        } else if !self.served.load(Ordering::Acquire) {
            Some(self.accepted + limits.header_timeout)
        } else {
            let done = *self.last_done.lock().unwrap_or_else(|e| e.into_inner());
            Some(done + limits.idle_timeout)
        }
    }
}

impl Connections {
    pub(crate) fn new(name: &'static str, limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                limits,
                open: Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(0),
                changed: Notify::new(),
            }),
        }
    }

    /// How many connections are open.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// Accepts the next connection once there is room for it: below the cap, or at the cap
    /// with an idle connection to close for it. While every connection is busy, new ones wait
    /// in the kernel's backlog instead of taking file descriptors.
    pub(crate) async fn accept(&self, listener: &TcpListener) -> io::Result<Limited> {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.has_room() {
                break;
            }
            changed.await;
        }
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors (or another transient failure): back off instead of
                // spinning on a listener that stays readable.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(e);
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY failed");
        }
        if let Some(time) = self.inner.limits.tcp_keepalive {
            let keepalive = socket2::TcpKeepalive::new().with_time(time);
            if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive) {
                tracing::debug!(error = %e, "setting TCP keep-alive failed");
            }
        }
        let conn = Arc::new(Conn {
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            last_done: Mutex::new(Instant::now()),
            close: CancellationToken::new(),
        });
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut open = self.inner.lock();
            if open.len() >= self.inner.limits.max_connections {
                evict_oldest_idle(&mut open, self.inner.name);
            }
            open.insert(id, conn.clone());
        }
        let now = Instant::now();
        Ok(Limited {
            tcp,
            remote,
            id,
            timer: Box::pin(tokio::time::sleep_until(
                now + self.inner.limits.header_timeout,
            )),
            closed: Box::pin(conn.close.clone().cancelled_owned()),
            conn,
            inner: self.inner.clone(),
        })
    }

    fn has_room(&self) -> bool {
        let open = self.inner.lock();
        open.len() < self.inner.limits.max_connections
            || open
                .values()
                .any(|c| c.in_flight.load(Ordering::Acquire) == 0)
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Closes the longest-open idle connection (ids grow with time), forgetting it at once so
/// the count stays within the cap while it shuts.
fn evict_oldest_idle(open: &mut BTreeMap<u64, Arc<Conn>>, server: &str) {
    let oldest = open
        .iter()
        .find(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
        .map(|(id, _)| *id);
    if let Some(id) = oldest
        && let Some(conn) = open.remove(&id)
    {
        tracing::debug!(
            server,
            "at the connection cap: closing the oldest idle connection"
        );
        conn.close.cancel();
    }
}

/// An accepted connection under its server's limits: reads fail (and the server closes it)
/// once its deadline passes with no call in flight, or when it is evicted.
pub(crate) struct Limited {
    tcp: TcpStream,
    remote: SocketAddr,
    id: u64,
    conn: Arc<Conn>,
    inner: Arc<Inner>,
    timer: Pin<Box<Sleep>>,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Limited {
    /// The handle calls on this connection count themselves with.
    pub(crate) fn info(&self) -> ConnInfo {
        ConnInfo {
            conn: self.conn.clone(),
            inner: self.inner.clone(),
            remote: self.remote,
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> Result<(), io::Error> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            ));
        }
        loop {
            let now = Instant::now();
            let deadline = match self.conn.deadline(&self.inner.limits) {
                Some(d) if d <= now => {
                    let what = if self.conn.served.load(Ordering::Acquire) {
                        "idle"
                    } else {
                        "no complete request"
                    };
                    tracing::debug!(server = self.inner.name, remote = %self.remote, what, "closing a connection at its deadline");
                    return Err(io::Error::new(io::ErrorKind::TimedOut, what));
                }
                Some(d) => d,
                // Busy: look again an idle period later.
                None => now + self.inner.limits.idle_timeout,
            };
            // This runs on every read, and each finished call moves the deadline later: a
            // pending timer set earlier will do (it fires, and the deadline is looked at
            // again), so the timer is re-armed only to move it earlier or once it fired.
            let armed = self.timer.deadline();
            if deadline < armed || armed <= now {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
        }
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        self.inner.lock().remove(&self.id);
        self.inner.changed.notify_waiters();
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Limited {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info()
    }
}

/// A connection as its calls see it (a request extension on gRPC).
#[derive(Clone)]
pub(crate) struct ConnInfo {
    conn: Arc<Conn>,
    inner: Arc<Inner>,
    remote: SocketAddr,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnInfo")
            .field("remote", &self.remote)
            .finish()
    }
}

impl ConnInfo {
    /// The address the connection came from.
    pub(crate) fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Counts a call in flight until the returned guard drops.
    pub(crate) fn begin(&self) -> CallGuard {
        self.conn.served.store(true, Ordering::Release);
        self.conn.in_flight.fetch_add(1, Ordering::AcqRel);
        CallGuard {
            conn: self.conn.clone(),
            inner: self.inner.clone(),
        }
    }
}

/// A call in flight; it ends when its response body is done (or dropped).
pub(crate) struct CallGuard {
    conn: Arc<Conn>,
    inner: Arc<Inner>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        *self
            .conn
            .last_done
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
        if self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.changed.notify_waiters();
        }
    }
}

/// A response body that holds its call's guard, so a streaming answer (`Watch`) keeps its
/// connection busy for as long as it streams.
pub(crate) struct Guarded<B> {
    body: B,
    _guard: Option<CallGuard>,
}

impl<B> Guarded<B> {
    pub(crate) fn new(body: B, guard: Option<CallGuard>) -> Self {
        Self {
            body,
            _guard: guard,
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Counts each gRPC call on its connection (see [`ConnInfo`]), so only connections with
/// nothing in flight are closed as idle, and tells the call where it came from
/// ([`firebreak_proto::access::RemoteAddr`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CountCallsLayer;

impl<S> tower::Layer<S> for CountCallsLayer {
    type Service = CountCalls<S>;

    fn layer(&self, inner: S) -> CountCalls<S> {
        CountCalls(inner)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CountCalls<S>(S);

impl<S, B, RB> tower::Service<Request<B>> for CountCalls<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<Guarded<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let info = req.extensions().get::<ConnInfo>().cloned();
        let guard = info.as_ref().map(ConnInfo::begin);
        if let Some(info) = info {
            req.extensions_mut()
                .insert(firebreak_proto::access::RemoteAddr(info.remote()));
        }
        let call = self.0.call(req);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| Guarded::new(body, guard)))
        })
    }
}

/// Raises the soft limit on open files to the hard limit, so connections and database and bus
/// sockets do not run out at the usual 1,024; returns the limit in force.
pub(crate) fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (limit.current, limit.maximum);
    if soft.is_some() && soft != hard {
        let raised = rustix::process::Rlimit {
            current: hard,
            maximum: hard,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::debug!(from = ?soft, to = ?hard, "raised the open-files limit");
                return hard;
            }
            Err(e) => tracing::warn!(error = %e, soft = ?soft, "cannot raise the open-files limit"),
        }
    }
    soft
}

/// Fits the two servers' connection caps under the open-files limit, keeping `reserve`
/// descriptors for everything else (databases, the bus, files); returns the caps to use.
pub(crate) fn fit_caps(grpc: usize, http: usize, fd_limit: Option<u64>) -> (usize, usize) {
    const RESERVE: u64 = 128;
    let Some(limit) = fd_limit else {
        return (grpc, http);
    };
    let room = usize::try_from(limit.saturating_sub(RESERVE))
        .unwrap_or(usize::MAX)
        .max(2);
    if grpc.saturating_add(http) <= room {
        return (grpc, http);
    }
    // Split the room in proportion, each server keeping at least one connection.
    let total = grpc.saturating_add(http) as f64;
    let grpc_fit = ((room as f64) * (grpc as f64) / total).floor() as usize;
    let grpc_fit = grpc_fit.clamp(1, room - 1);
    let http_fit = (room - grpc_fit).min(http).max(1);
    tracing::warn!(
        open_files = limit,
        grpc_max_connections = grpc_fit,
        http_max_connections = http_fit,
        "the open-files limit is below the configured connection caps: lowered them"
    );
    (grpc_fit, http_fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_under_the_open_files_limit() {
        assert_eq!(fit_caps(4096, 512, None), (4096, 512));
        assert_eq!(fit_caps(4096, 512, Some(1_048_576)), (4096, 512));
        let (g, h) = fit_caps(4096, 512, Some(1024));
        assert!(g + h <= 1024 - 128, "{g} + {h}");
        assert!(g > h && h >= 1);
        let (g, h) = fit_caps(10, 10, Some(10));
        assert!(g >= 1 && h >= 1);
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Connections::new(
            "test",
            Limits {
                max_connections: 2,
                header_timeout: Duration::from_secs(3600),
                idle_timeout: Duration::from_secs(3600),
                tcp_keepalive: None,
            },
        );
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let first = conns.accept(&listener).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let second = conns.accept(&listener).await.unwrap();
        // The second is busy; the first, idle, is closed for the third.
        let busy = second.info().begin();
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let _third = conns.accept(&listener).await.unwrap();
        assert_eq!(conns.len(), 2);
        assert!(first.conn.close.is_cancelled());
        assert!(!second.conn.close.is_cancelled());
        drop(first);
        // Both open ones busy now: the next accept waits until one call ends.
        let third_busy = _third.info().begin();
        let _c4 = TcpStream::connect(addr).await.unwrap();
        let waiting = conns.accept(&listener);
        tokio::pin!(waiting);
        assert!(futures::FutureExt::now_or_never(waiting.as_mut()).is_none());
        drop(busy);
        let _fourth = waiting.await.unwrap();
        assert!(second.conn.close.is_cancelled());
        assert!(!_third.conn.close.is_cancelled());
        drop(third_busy);
    }
}
