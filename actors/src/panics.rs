//! Keeps the message of the last panic, so that a node actor re-created after
//! a panic in one of its handlers can say why in `last_error`.
//!
//! actix gives nothing back from a panicking handler (the mailbox just
//! closes), so a process-wide panic hook records the message; the supervisor
//! takes it when it finds the dead mailbox. This slot is diagnostics, not node
//! state: no node's record is ever guarded by it.
//!
//! It also reads the message out of a panicked tokio task ([`join_text`]),
//! for the driver calls and periodic task runs that run as one.

use std::sync::{Mutex, Once};

static LAST: Mutex<Option<String>> = Mutex::new(None);
static INSTALL: Once = Once::new();

/// Installs the hook (once per process), keeping the previous hook's output.
pub fn install_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = payload_text(info.payload());
            if let Ok(mut slot) = LAST.lock() {
                *slot = Some(text);
            }
            previous(info);
        }));
    });
}

/// Takes the last recorded panic message, if any.
pub fn take_last() -> Option<String> {
    LAST.lock().ok().and_then(|mut s| s.take())
}

/// The message a panicking task carried (a spawned driver call, a periodic
/// task run), or what ended it otherwise.
pub fn join_text(join: tokio::task::JoinError) -> String {
    if !join.is_panic() {
        return "the call was cancelled".into();
    }
    payload_text(join.into_panic().as_ref())
}

/// A panic payload's message: `panic!` carries a `&str` or a `String`.
fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}
