//! A BMC password held in memory: the one place it can be read is
//! [`Secret::expose`], called where it leaves for the BMC (an HTTP
//! `Authorization` header, ipmitool's environment). `Debug` shows `******`, so
//! a driver that derives or prints `Debug` cannot leak it by accident.

use std::fmt;

#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces the secret wherever it occurs in `text`: a last line of
    /// defence for text a BMC tool printed, which kiln does not control.
    pub(crate) fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() { text.to_string() } else { text.replace(&self.0, "******") }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("******")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_itself() {
        let s = Secret::new("hunter22");
        assert_eq!(format!("{s:?}"), "******");
        assert_eq!(s.scrub("user admin password hunter22"), "user admin password ******");
        assert_eq!(Secret::default().scrub("as is"), "as is");
    }
}
