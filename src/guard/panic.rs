//! Panic containment (issue 14). A panic anywhere is logged through `log`
//! with the thread's name and the location ([`install_hook`]); the places
//! that must survive one run their work under [`contain`]: each FUSE
//! request (the reply, dropped while unwinding, answers EIO and the worker
//! lives on), each control connection (its slot is released), each round
//! of the maintenance worker (restarted by its supervisor).
//!
//! Poison policy ([`lock_or_recover`]): a mutex whose holder panicked is
//! taken over, not propagated, when every critical section that uses it
//! leaves the data consistent at each point a panic could occur (a map
//! insert/remove, a counter, a whole-value assignment). The call sites say
//! which lock they are. A lock guarding a multi-step update that a panic
//! could leave half done keeps `.lock().unwrap()`-style failure.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

/// Log every panic (thread name, location, message) through `log` as an
/// error, then run the default hook (which prints to stderr). Call once,
/// early in `main`.
pub fn install_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "<unknown>".into());
        log::error!(
            "panic in thread {name} at {location}: {}",
            message(info.payload())
        );
        previous(info);
    }));
}

/// The text of a panic payload (`&str` or `String`; anything else is named
/// as such).
pub fn message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".into()
    }
}

/// Run `f`; if it panics, log `what` with the message and return it as
/// `Err`. Whatever `f` owns (a FUSE reply, a connection) is dropped while
/// unwinding.
pub fn contain<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = message(p.as_ref());
        log::error!("{what} panicked and was contained: {msg}");
        msg
    })
}

/// Lock `m`, taking over a poisoned lock (see the module's poison policy:
/// only for mutexes whose data stays consistent across a panic).
pub fn lock_or_recover<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| {
        log::warn!("a lock poisoned by a panic was taken over");
        m.clear_poison();
        poisoned.into_inner()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contain_returns_the_panic_message_and_the_thread_lives() {
        let r = contain("test", || -> u32 { panic!("boom {}", 7) });
        assert_eq!(r, Err("boom 7".to_string()));
        assert_eq!(contain("test", || 5), Ok(5));
    }

    #[test]
    fn a_poisoned_lock_is_recovered_with_its_data() {
        let m = std::sync::Arc::new(Mutex::new(3));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock_or_recover(&m) += 1;
        assert_eq!(*lock_or_recover(&m), 4);
        assert!(!m.is_poisoned());
    }
}
