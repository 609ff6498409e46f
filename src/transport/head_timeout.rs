//! The header-read timeout (`server.header_read_timeout_ms`) without a timer per request.
//!
//! hyper enforces it with the runtime's timer: while it waits for a request head it asks
//! [`hyper::rt::Timer`] for a sleep, and drops it once the head has arrived — so with tokio's
//! timer every request on a keep-alive connection inserts an entry into the shared timer wheel
//! and removes it again (a lock shared by all worker threads, clock reads, a runtime handle
//! clone), which a profile under load shows on the hot path.
//!
//! Here each connection gets its own [`HeadTimer`]: hyper's sleeps only record their deadline
//! in the connection's [`HeadWatch`], and one tokio sleep per connection — the [`Watched`]
//! wrapper around the connection future — fires at most once per timeout period. When it
//! fires it checks the deadline of the head hyper is waiting for: passed, and the pending sleep
//! reports it (hyper then closes the connection, exactly as with tokio's timer); not passed, or
//! no head awaited, and it re-arms. A connection is closed at its head's deadline, never later.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A fixed origin, so deadlines fit an atomic integer (nanoseconds after it).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn to_nanos(at: Instant) -> u64 {
    // 0 means "no deadline"; a deadline at the epoch itself becomes 1 ns after it.
    (at.saturating_duration_since(epoch()).as_nanos() as u64).max(1)
}

/// One connection's pending head deadline.
#[derive(Default)]
pub struct HeadWatch {
    /// Deadline of the head hyper waits for, in nanoseconds after [`epoch`]; 0: none.
    deadline: AtomicU64,
    /// Set by the watchdog once that deadline has passed.
    expired: AtomicBool,
}

/// hyper's timer for one connection (see the module docs).
#[derive(Clone, Default)]
pub struct HeadTimer(Arc<HeadWatch>);

impl HeadTimer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The head now awaited is due at `deadline`.
    fn arm(&self, deadline: Instant) {
        self.0.expired.store(false, Ordering::Relaxed);
        self.0.deadline.store(to_nanos(deadline), Ordering::Relaxed);
    }
}

/// Now on tokio's clock, which the watchdog sleeps on (the same as the system's monotonic
/// clock, except under a paused test clock).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(now() + duration)
    }

    fn now(&self) -> Instant {
        now()
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let sleep = Box::pin(HeadSleep(self.0.clone()));
        self.arm(deadline);
        sleep
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        // hyper resets only sleeps it got from this timer. The old one goes first: dropping it
        // clears the deadline.
        *sleep = Box::pin(HeadSleep(self.0.clone()));
        self.arm(new_deadline);
    }
}

/// The sleep hyper holds while it waits for a head: ready once the watchdog saw its deadline
/// pass. Woken by the watchdog, which runs in the same task.
struct HeadSleep(Arc<HeadWatch>);

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0.expired.load(Ordering::Relaxed) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl hyper::rt::Sleep for HeadSleep {}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        // The head arrived (or the connection ends): nothing awaited any more.
        self.0.deadline.store(0, Ordering::Relaxed);
        self.0.expired.store(false, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A connection future with its watchdog: one tokio sleep per connection.
    pub struct Watched<F> {
        #[pin]
        connection: F,
        #[pin]
        watchdog: tokio::time::Sleep,
        // The waker the watchdog's sleep holds, if it holds one: until it fires (or is reset)
        // polling it again with the same waker would only repeat the registration.
        registered: Option<std::task::Waker>,
        watch: Arc<HeadWatch>,
        period: Duration,
    }
}

/// Watches `connection`, served with `timer`, whose heads are due within `period`.
pub fn watched<F: Future>(connection: F, timer: &HeadTimer, period: Duration) -> Watched<F> {
    Watched {
        connection,
        watchdog: tokio::time::sleep(period),
        registered: None,
        watch: timer.0.clone(),
        period,
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        loop {
            if let Poll::Ready(output) = this.connection.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            if poll_watchdog(this.watchdog.as_mut(), this.registered, cx).is_pending() {
                return Poll::Pending;
            }
            let now = now();
            let deadline = this.watch.deadline.load(Ordering::Relaxed);
            if deadline != 0 && to_nanos(now) >= deadline {
                // Passed: the pending head sleep is now ready; poll the connection again so
                // that hyper sees it. Check again a period later should it still be open.
                this.watch.expired.store(true, Ordering::Relaxed);
                this.watchdog.as_mut().reset((now + *this.period).into());
                *this.registered = None;
                continue;
            }
            let next = if deadline == 0 {
                now + *this.period
            } else {
                epoch() + Duration::from_nanos(deadline)
            };
            this.watchdog.as_mut().reset(next.into());
            *this.registered = None;
            // Registered at its new deadline by the next poll.
            if poll_watchdog(this.watchdog.as_mut(), this.registered, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// Polls the watchdog's sleep unless it already holds `cx`'s waker and has not fired: a
/// connection is polled about twice per request, and each poll of a tokio sleep costs a
/// cooperative-budget check and a waker registration that
/// change nothing while the sleep is pending. The sleep leaves the timer wheel when it fires
/// ([`tokio::time::Sleep::is_elapsed`]), and the poll that follows its wake-up sees that.
fn poll_watchdog(
    watchdog: Pin<&mut tokio::time::Sleep>,
    registered: &mut Option<std::task::Waker>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if let Some(waker) = registered {
        if waker.will_wake(cx.waker()) && !watchdog.is_elapsed() {
            return Poll::Pending;
        }
    }
    // Without cooperative budget left, the sleep answers Pending without taking the waker.
    let registers = tokio::task::coop::has_budget_remaining();
    let polled = watchdog.poll(cx);
    *registered = (polled.is_pending() && registers).then(|| cx.waker().clone());
    polled
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_pending_head_times_out_at_its_deadline_and_not_before() {
        let timer = HeadTimer::new();
        let started = Instant::now();
        // The "connection": idle for 400 ms with no head awaited, then waits on a head sleep
        // due 300 ms later. The watchdog's period is 200 ms.
        let t = timer.clone();
        let connection = async move {
            tokio::time::sleep(400 * MS).await;
            t.sleep_until(t.now() + 300 * MS).await;
            Instant::now()
        };
        let fired = tokio::time::timeout(
            Duration::from_secs(5),
            watched(connection, &timer, 200 * MS),
        )
        .await
        .expect("the head timed out");
        let waited = fired - started;
        assert!(waited >= 700 * MS && waited < 1_500 * MS, "{waited:?}");
    }

    #[tokio::test]
    async fn a_reset_sleep_keeps_its_new_deadline() {
        let timer = HeadTimer::new();
        let t = timer.clone();
        let started = Instant::now();
        let connection = async move {
            let mut sleep = t.sleep_until(t.now() + 5_000 * MS);
            t.reset(&mut sleep, t.now() + 200 * MS);
            sleep.await;
            Instant::now()
        };
        let fired = tokio::time::timeout(
            Duration::from_secs(3),
            watched(connection, &timer, 100 * MS),
        )
        .await
        .expect("the reset deadline was kept");
        assert!(fired - started >= 200 * MS, "{:?}", fired - started);
    }

    #[tokio::test]
    async fn heads_that_arrive_in_time_never_time_out() {
        let timer = HeadTimer::new();
        let t = timer.clone();
        // 20 heads, each arriving 30 ms into its 90 ms allowance, over several 50 ms periods.
        let connection = async move {
            for _ in 0..20 {
                let sleep = t.sleep_until(t.now() + 90 * MS);
                let arrived = tokio::time::sleep(30 * MS);
                tokio::select! {
                    biased;
                    _ = arrived => {}
                    _ = sleep => return false,
                }
            }
            true
        };
        assert!(watched(connection, &timer, 50 * MS).await);
    }
}
