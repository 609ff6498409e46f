//! Graceful shutdown of open connections, at no cost per request.
//!
//! Why not `hyper_util`'s `GracefulShutdown`: its connection wrapper polls a
//! `watch::Receiver::changed()` future on every poll of the connection, which takes the
//! channel's waiter lock each time, and a connection is polled about twice per request (a
//! constant axum handler pays nothing of the kind; the cost measured is in docs/performance.md).
//!
//! Here a connection registers its waker once, under a mutex, and re-registers only if it is
//! polled with a different waker (a spawned task's waker never changes); every other poll is
//! one atomic load of the `closing` flag. [`Drain::shutdown`] sets the flag, wakes every
//! registered connection (each then starts hyper's graceful shutdown: finish the request in
//! flight, then close) and waits until the last connection future is dropped.
//!
//! Ordering: a connection registers, then reads the flag; shutdown sets the flag, then takes
//! the registrations. Either the registration is taken (and woken), or the registering
//! connection, which locked the mutex after shutdown did, sees the flag.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use hyper_util::server::graceful::GracefulConnection;
use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Default)]
struct Shared {
    closing: AtomicBool,
    /// Wakers of the open connections, by registration number.
    wakers: Mutex<Registrations>,
    /// Connection futures not yet dropped.
    open: AtomicUsize,
    /// Notified when `open` drops to zero while closing.
    drained: Notify,
}

#[derive(Default)]
struct Registrations {
    next: u64,
    by_id: HashMap<u64, Waker>,
}

/// Tracks connections and shuts them down gracefully (see the module docs).
#[derive(Clone, Default)]
pub struct Drain(Arc<Shared>);

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// `connection`, shut down gracefully when [`Self::shutdown`] is called.
    pub fn watch<C: GracefulConnection>(&self, connection: C) -> Draining<C> {
        self.hold().watch(connection)
    }

    /// Counts a connection that is not yet served (a TLS handshake in progress) as open from
    /// now: shutdown waits for it until the hold is dropped or, through [`Hold::watch`], for the
    /// connection it becomes.
    pub fn hold(&self) -> Hold {
        self.0.open.fetch_add(1, Ordering::AcqRel);
        Hold(self.0.clone())
    }

    /// Asks every watched connection to finish its request in flight and close, and waits
    /// until all of them (including any watched from now on) have ended.
    pub async fn shutdown(&self) {
        self.0.closing.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = {
            let mut registrations = self.0.wakers.lock();
            registrations
                .by_id
                .drain()
                .map(|(_, waker)| waker)
                .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
        loop {
            let drained = self.0.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.0.open.load(Ordering::Acquire) == 0 {
                return;
            }
            drained.await;
        }
    }

    /// Connections being served.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }
}

/// An open connection, counted until dropped (see [`Drain::hold`]).
pub struct Hold(Arc<Shared>);

impl Hold {
    /// The connection this hold counted, now watched (and still counted, until it ends).
    pub fn watch<C: GracefulConnection>(self, connection: C) -> Draining<C> {
        Draining {
            connection,
            hold: self,
            registered: None,
            signalled: false,
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.closed_one();
    }
}

impl Shared {
    /// One open connection (watched or held) has ended.
    fn closed_one(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 && self.closing.load(Ordering::SeqCst) {
            self.drained.notify_waiters();
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection future that starts hyper's graceful shutdown when its [`Drain`] closes.
    pub struct Draining<C> {
        #[pin]
        connection: C,
        // Counts the connection as open until it is dropped.
        hold: Hold,
        // This connection's registration: its number and the waker it holds.
        registered: Option<(u64, Waker)>,
        // Whether graceful shutdown has been started.
        signalled: bool,
    }

    impl<C> PinnedDrop for Draining<C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some((id, _)) = this.registered.take() {
                this.hold.0.wakers.lock().by_id.remove(&id);
            }
        }
    }
}

impl<C: GracefulConnection> Future for Draining<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if !*this.signalled {
            let current =
                matches!(this.registered, Some((_, waker)) if waker.will_wake(cx.waker()));
            if !current {
                let mut registrations = this.hold.0.wakers.lock();
                let id = match this.registered {
                    Some((id, _)) => *id,
                    None => {
                        registrations.next += 1;
                        registrations.next
                    }
                };
                registrations.by_id.insert(id, cx.waker().clone());
                *this.registered = Some((id, cx.waker().clone()));
            }
            if this.hold.0.closing.load(Ordering::SeqCst) {
                *this.signalled = true;
                if let Some((id, _)) = this.registered.take() {
                    this.hold.0.wakers.lock().by_id.remove(&id);
                }
                this.connection.as_mut().graceful_shutdown();
            }
        }
        this.connection.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

    /// Serves every accepted connection with hyper, watched by `drain`; each request is
    /// answered `done` after 300 ms.
    async fn serve(drain: Drain) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let service = hyper::service::service_fn(|_| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"done")),
                    ))
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                tokio::spawn(drain.watch(connection));
            }
        });
        addr
    }

    /// `drain.shutdown()` in a task of its own.
    fn spawn_shutdown(drain: &Drain) -> tokio::task::JoinHandle<()> {
        let drain = drain.clone();
        tokio::spawn(async move { drain.shutdown().await })
    }

    /// Everything the peer sends until it closes, or `None` if it is still open after `wait`.
    async fn read_to_close(tcp: &mut TcpStream, wait: Duration) -> Option<String> {
        let mut got = Vec::new();
        tokio::time::timeout(wait, tcp.read_to_end(&mut got))
            .await
            .ok()
            .map(|read| {
                read.unwrap();
                String::from_utf8_lossy(&got).into_owned()
            })
    }

    #[tokio::test]
    async fn shutdown_finishes_requests_in_flight_and_closes_idle_connections() {
        let drain = Drain::new();
        let addr = serve(drain.clone()).await;
        let mut busy = TcpStream::connect(addr).await.unwrap();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        // The idle one first serves a request, so it is a keep-alive connection at rest.
        idle.write_all(REQUEST).await.unwrap();
        let mut first = [0u8; 512];
        let n = idle.read(&mut first).await.unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).ends_with("done"));
        busy.write_all(REQUEST).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(drain.open(), 2);
        assert!(
            read_to_close(&mut idle, Duration::from_millis(200))
                .await
                .is_none(),
            "a keep-alive connection stays open until shutdown"
        );

        let shutdown = spawn_shutdown(&drain);
        let answer = read_to_close(&mut busy, Duration::from_secs(2))
            .await
            .expect("the busy connection closes after its answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.ends_with("done"),
            "the request in flight finished: {answer}"
        );
        assert_eq!(
            read_to_close(&mut idle, Duration::from_secs(2)).await,
            Some(String::new()),
            "the idle connection is closed without an answer"
        );
        tokio::time::timeout(Duration::from_secs(2), shutdown)
            .await
            .expect("shutdown returns once every connection has ended")
            .unwrap();
        assert_eq!(drain.open(), 0);
    }

    #[tokio::test]
    async fn a_connection_opened_during_shutdown_is_shut_down_too() {
        let drain = Drain::new();
        let addr = serve(drain.clone()).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(REQUEST).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let shutdown = spawn_shutdown(&drain);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Accepted after the flag was set: closed right after its first answer.
        let mut late = TcpStream::connect(addr).await.unwrap();
        late.write_all(REQUEST).await.unwrap();
        let answer = read_to_close(&mut late, Duration::from_secs(2))
            .await
            .expect("closed");
        assert!(answer.is_empty() || answer.ends_with("done"), "{answer}");
        read_to_close(&mut first, Duration::from_secs(2))
            .await
            .expect("closed");
        tokio::time::timeout(Duration::from_secs(2), shutdown)
            .await
            .expect("shutdown returned")
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_waits_for_a_held_connection() {
        let drain = Drain::new();
        let hold = drain.hold();
        let shutdown = spawn_shutdown(&drain);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !shutdown.is_finished(),
            "a held connection keeps shutdown waiting"
        );
        drop(hold);
        tokio::time::timeout(Duration::from_secs(1), shutdown)
            .await
            .expect("shutdown returns once the hold is dropped")
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_with_nothing_open_returns_at_once() {
        let drain = Drain::new();
        tokio::time::timeout(Duration::from_secs(1), drain.shutdown())
            .await
            .expect("nothing to wait for");
    }
}
