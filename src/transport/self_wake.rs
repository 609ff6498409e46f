//! A connection that wakes itself while being polled is polled again at once, instead of
//! being rescheduled.
//!
//! Why: reading any request body through hyper wakes the connection's own task from inside its
//! poll — hyper's body channel wakes the sender (hyper's dispatcher, in the same task) whenever
//! the receiver (the handler, polled by that dispatcher) takes a chunk. tokio treats a task woken
//! while it runs as a yield: after the poll it goes to the back of the run queue and an idle
//! worker thread is woken to steal it (a futex system call, a context switch, and often the
//! connection moving to the other core). `strace` shows two futex calls per `/tl/st` request on
//! a single connection; none for the body-less `fresh-timestamp`.
//!
//! How: the connection is polled with a waker of our own. A wake that arrives while we are
//! polling only marks the poll to be repeated; any other wake goes to the task's real waker. At
//! most [`MAX_REPOLLS`] repeats per poll, then the task yields as usual, so a connection that
//! keeps waking itself cannot starve the others.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

/// Repeats of one poll at most; then the task is rescheduled.
const MAX_REPOLLS: usize = 4;

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const POLLING_WOKEN: u8 = 2;

/// The waker the connection is polled with.
struct Relay {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // While polling, mark the poll to be repeated; otherwise wake the task.
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            match state {
                POLLING => match self.state.compare_exchange_weak(
                    POLLING,
                    POLLING_WOKEN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return,
                    Err(now) => state = now,
                },
                POLLING_WOKEN => return,
                _ => {
                    self.task.wake();
                    return;
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A future polled again at once when it wakes itself (see the module docs).
    pub struct Repolled<F> {
        #[pin]
        inner: F,
        relay: Arc<Relay>,
        waker: Waker,
    }
}

pub fn repolled<F: Future>(inner: F) -> Repolled<F> {
    let relay = Arc::new(Relay {
        state: AtomicU8::new(IDLE),
        task: AtomicWaker::new(),
    });
    Repolled {
        inner,
        waker: Waker::from(relay.clone()),
        relay,
    }
}

impl<F: Future> Future for Repolled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        this.relay.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(this.waker);
        for _ in 0..=MAX_REPOLLS {
            this.relay.state.store(POLLING, Ordering::Release);
            let polled = this.inner.as_mut().poll(&mut inner_cx);
            match this.relay.state.swap(IDLE, Ordering::AcqRel) {
                _ if polled.is_ready() => return polled,
                POLLING_WOKEN => continue,
                _ => return Poll::Pending,
            }
        }
        // Still waking itself: let the scheduler run others first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Ready on its `n`th poll; wakes itself on each earlier poll, and counts its polls.
    struct SelfWaking {
        polls: Arc<AtomicUsize>,
        ready_at: usize,
    }

    impl Future for SelfWaking {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let n = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= self.ready_at {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn self_wakes_repoll_at_once_and_a_bounded_number_of_times() {
        let outer = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(outer.clone());
        let mut cx = Context::from_waker(&waker);

        // Ready on the third poll: one outer poll, no wake of the task.
        let polls = Arc::new(AtomicUsize::new(0));
        let mut f = Box::pin(repolled(SelfWaking {
            polls: polls.clone(),
            ready_at: 3,
        }));
        assert!(f.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        assert_eq!(outer.0.load(Ordering::SeqCst), 0);

        // Never ready: 1 + MAX_REPOLLS polls, then the task is woken to yield.
        let polls = Arc::new(AtomicUsize::new(0));
        let mut f = Box::pin(repolled(SelfWaking {
            polls: polls.clone(),
            ready_at: usize::MAX,
        }));
        assert!(f.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1 + MAX_REPOLLS);
        assert_eq!(outer.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn wakes_from_outside_a_poll_reach_the_task() {
        let outer = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(outer.clone());
        let mut cx = Context::from_waker(&waker);
        let (tx, rx) = std::sync::mpsc::channel::<Waker>();
        let mut f = Box::pin(repolled(std::future::poll_fn(move |cx| {
            tx.send(cx.waker().clone()).unwrap();
            Poll::<()>::Pending
        })));
        assert!(f.as_mut().poll(&mut cx).is_pending());
        let inner = rx.recv().unwrap();
        assert_eq!(outer.0.load(Ordering::SeqCst), 0);
        std::thread::spawn(move || inner.wake()).join().unwrap();
        assert_eq!(outer.0.load(Ordering::SeqCst), 1);
    }
}
