//! Keeps the message of the last panic, so that a node actor re-created after
//! a panic in one of its handlers can say why in `last_error`.
//!
//! actix gives nothing back from a panicking handler (the mailbox just
//! closes), so a process-wide panic hook records the message; the supervisor
//! takes it when it finds the dead mailbox. This slot is diagnostics, not node
//! state: no node's record is ever guarded by it.

use std::sync::{Mutex, Once};

static LAST: Mutex<Option<String>> = Mutex::new(None);
static INSTALL: Once = Once::new();

/// Installs the hook (once per process), keeping the previous hook's output.
pub fn install_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
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
