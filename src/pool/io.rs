//! Per-member I/O workers: every call that touches a member disk in the
//! data path runs on that member's own long-lived threads, fed by a
//! bounded queue, and the caller waits for it with a deadline.
//!
//! Why: a member that hangs (a dying drive, a stuck NFS or USB mount)
//! answers nothing and returns no error. Without a deadline one such call
//! blocks its caller forever; with one, the caller gets
//! [`IoFail::Timeout`], counts it against the member's health (timeouts
//! make it suspect, then failed) and goes on without it. The worker thread
//! stays stuck inside the system call, so the member's queue fills up; a
//! full queue answers [`IoFail::Busy`] at once, which is also counted, so a
//! hung member is failed out after a bounded number of fast errors instead
//! of one deadline per request.
//!
//! No thread is spawned per stripe or per shard: each member has
//! [`WORKERS`] threads for its whole life.

use crossbeam::channel::{bounded, Receiver, Sender, TrySendError};
use std::io;
use std::time::{Duration, Instant};

/// Threads per member. Two lets a small read pass a long write and keeps
/// a queue for the disk's own scheduler; more would only add seeks.
pub const WORKERS: usize = 2;
/// Requests a member may have queued before new ones are refused (Busy).
pub const QUEUE_DEPTH: usize = 256;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a member call did not return a result.
#[derive(Debug)]
pub enum IoFail {
    /// The disk returned an error.
    Io(io::Error),
    /// No answer before the deadline (the member may be hung).
    Timeout(Duration),
    /// The member's queue is full: it is not keeping up (or hung).
    Busy,
}

impl std::fmt::Display for IoFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoFail::Io(e) => write!(f, "{e}"),
            IoFail::Timeout(d) => write!(f, "no answer within {} ms", d.as_millis()),
            IoFail::Busy => write!(f, "request queue full (member not answering)"),
        }
    }
}

impl IoFail {
    /// True when the member ran out of space (reported to the writer as
    /// ENOSPC, never a health verdict).
    pub fn is_full(&self) -> bool {
        matches!(self, IoFail::Io(e) if e.raw_os_error() == Some(libc::ENOSPC))
    }

    /// True when the file asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, IoFail::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// A call handed to a member's workers; [`Ticket::wait`] collects it.
pub struct Ticket<T> {
    rx: Receiver<io::Result<T>>,
}

impl<T> Ticket<T> {
    /// Wait for the result until `deadline` (an instant, so that several
    /// tickets of one request share one deadline).
    pub fn wait_until(self, deadline: Instant) -> Result<T, IoFail> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(IoFail::Io(e)),
            Err(_) => Err(IoFail::Timeout(left)),
        }
    }

    /// The channel the result arrives on, to keep.
    pub fn into_receiver(self) -> Receiver<io::Result<T>> {
        self.rx
    }

    /// The channel the result arrives on (to select over several).
    pub fn receiver(&self) -> &Receiver<io::Result<T>> {
        &self.rx
    }
}

/// A set of long-lived worker threads with a bounded queue: the I/O
/// workers of one member, or the pool's stripe writers.
#[derive(Debug)]
pub struct Workers {
    tx: Sender<Job>,
}

impl Workers {
    /// Start the workers of member `index`.
    pub fn start(index: u16) -> Workers {
        Self::named(&format!("member-io-{index}"), WORKERS, QUEUE_DEPTH)
    }

    /// Start `threads` workers named `name.N` with a queue of `depth`.
    pub fn named(name: &str, threads: usize, depth: usize) -> Workers {
        let (tx, rx) = bounded::<Job>(depth);
        for w in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}.{w}"))
                .spawn(move || {
                    // ends when the member (and its sender) is dropped
                    for job in rx {
                        job();
                    }
                });
            if let Err(e) = spawned {
                log::error!("{name}: cannot start worker thread: {e}");
            }
        }
        Workers { tx }
    }

    /// Queue `f` on the member's workers.
    pub fn submit<T, F>(&self, f: F) -> Result<Ticket<T>, IoFail>
    where
        T: Send + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
    {
        let (rtx, rrx) = bounded(1);
        let job: Job = Box::new(move || {
            // a panic in the disk code is an I/O error of this call, not a
            // dead worker
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err(io::Error::other("member I/O panicked")));
            let _ = rtx.send(r);
        });
        match self.tx.try_send(job) {
            Ok(()) => Ok(Ticket { rx: rrx }),
            Err(TrySendError::Full(_)) => Err(IoFail::Busy),
            Err(TrySendError::Disconnected(_)) => {
                Err(IoFail::Io(io::Error::other("member I/O workers are gone")))
            }
        }
    }

    /// Run `f` on the member's workers and wait at most `timeout`.
    pub fn call<T, F>(&self, timeout: Duration, f: F) -> Result<T, IoFail>
    where
        T: Send + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
    {
        let deadline = Instant::now() + timeout;
        self.submit(f)?.wait_until(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_returns_its_result() {
        let io = Workers::start(0);
        assert_eq!(io.call(Duration::from_secs(5), || Ok(7)).unwrap(), 7);
        let e = io
            .call::<(), _>(Duration::from_secs(5), || {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            })
            .unwrap_err();
        assert!(e.is_full());
    }

    #[test]
    fn a_hung_call_times_out_and_a_full_queue_is_busy_at_once() {
        let io = Workers::start(1);
        let (hold_tx, hold_rx) = bounded::<()>(0);
        // occupy both workers
        for _ in 0..WORKERS {
            let r = hold_rx.clone();
            io.submit(move || {
                let _ = r.recv();
                Ok(())
            })
            .unwrap();
        }
        let t0 = Instant::now();
        let e = io.call(Duration::from_millis(100), || Ok(1)).unwrap_err();
        assert!(matches!(e, IoFail::Timeout(_)), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        // fill the queue: the next submission is refused without waiting
        let mut n = 0;
        while io.submit(|| Ok(())).is_ok() {
            n += 1;
            assert!(n <= QUEUE_DEPTH + 1);
        }
        let t1 = Instant::now();
        assert!(matches!(
            io.call(Duration::from_secs(5), || Ok(())),
            Err(IoFail::Busy)
        ));
        assert!(t1.elapsed() < Duration::from_millis(500));
        drop(hold_tx);
    }

    #[test]
    fn a_panicking_call_is_an_error_and_the_worker_lives_on() {
        let io = Workers::start(2);
        let e = io
            .call::<(), _>(Duration::from_secs(5), || panic!("boom"))
            .unwrap_err();
        assert!(matches!(e, IoFail::Io(_)));
        for _ in 0..WORKERS * 2 {
            assert_eq!(io.call(Duration::from_secs(5), || Ok(3)).unwrap(), 3);
        }
    }
}
