//! Where a PostgreSQL store is: a `postgres://` URL, checked once, whose
//! password never reaches a message.
//!
//! The URL is parsed by tokio-postgres itself ([`tokio_postgres::Config`]),
//! so what is accepted is what will be used. Every way the target can be
//! printed (`Display`, `Debug`, errors about it) shows [`mask_url`]'s text,
//! with the password replaced by `***`, whether it came in the user-info
//! part (`postgres://kiln:SECRET@host/db`) or as a `password=` parameter.

use std::fmt;
use std::str::FromStr;

/// Which store a site uses: the `store` setting.
#[derive(Clone, Debug, Default)]
pub enum StoreTarget {
    /// `sqlite` (the default): the embedded file in the data dir.
    #[default]
    Sqlite,
    /// A `postgres://` URL.
    Postgres(PgTarget),
}

impl StoreTarget {
    /// `"sqlite"` or a `postgres://` URL; the error never holds the password.
    pub fn parse(text: &str) -> Result<StoreTarget, TargetError> {
        match text {
            "sqlite" => Ok(StoreTarget::Sqlite),
            url => PgTarget::parse(url).map(StoreTarget::Postgres),
        }
    }
}

impl fmt::Display for StoreTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreTarget::Sqlite => f.write_str("sqlite"),
            StoreTarget::Postgres(target) => target.fmt(f),
        }
    }
}

/// Why a `store` setting was refused. Every URL it holds is masked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("'{0}' is neither \"sqlite\" nor a postgres:// URL")]
    NotPostgres(String),
    #[error("'{url}' is not a usable PostgreSQL URL: {why}")]
    Unusable { url: String, why: String },
    #[error("'{0}' names no host")]
    NoHost(String),
}

/// A PostgreSQL URL that parsed, holding its password out of sight.
#[derive(Clone)]
pub struct PgTarget {
    url: String,
    masked: String,
    tls: Tls,
}

/// What `sslmode` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// `sslmode=disable`: plain TCP (a loopback or a trusted network).
    Disable,
    /// `sslmode=prefer` (the default): TLS when the server offers it.
    Prefer,
    /// `sslmode=require`: TLS or no session. As libpq's `require`, the
    /// server's certificate is not verified: this protects against
    /// listening, not against a server that impersonates another.
    Require,
}

impl PgTarget {
    /// Parses `text`; the error names what is wrong, never the password.
    pub fn parse(text: &str) -> Result<PgTarget, TargetError> {
        let masked = mask_url(text);
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(TargetError::NotPostgres(masked));
        }
        let config = match tokio_postgres::Config::from_str(text) {
            Ok(config) => config,
            Err(e) => return Err(TargetError::Unusable { why: mask_text(&e.to_string(), text), url: masked }),
        };
        if config.get_hosts().is_empty() {
            return Err(TargetError::NoHost(masked));
        }
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => Tls::Disable,
            tokio_postgres::config::SslMode::Require => Tls::Require,
            _ => Tls::Prefer,
        };
        Ok(PgTarget { url: text.to_string(), masked, tls })
    }

    /// The URL with its password masked: what messages show.
    pub fn masked(&self) -> &str {
        &self.masked
    }

    /// The TLS mode asked for.
    pub fn tls(&self) -> Tls {
        self.tls
    }

    /// The driver's configuration, password included: for connecting only.
    pub(crate) fn config(&self) -> tokio_postgres::Config {
        // Parsed once already in `parse`.
        tokio_postgres::Config::from_str(&self.url).unwrap_or_default()
    }

    /// `text` (an error from the driver) with this target's password, if
    /// any, masked: drivers may quote what they were given.
    pub fn scrub(&self, text: &str) -> String {
        mask_text(text, &self.url)
    }
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked)
    }
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PgTarget").field(&self.masked).finish()
    }
}

/// `url` with any password replaced by `***`. Never fails: text that is
/// not a URL comes back with only its password-looking parts masked.
pub fn mask_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..].find(['/', '?']).map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    mask_password_params(&out)
}

/// Masks every `password=VALUE` (a query parameter or a key/value pair).
fn mask_password_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.to_ascii_lowercase().find("password=") {
        let value_start = i + "password=".len();
        out.push_str(&rest[..value_start]);
        out.push_str("***");
        let value_end = rest[value_start..].find(['&', ' ']).map_or(rest.len(), |j| value_start + j);
        rest = &rest[value_end..];
    }
    out.push_str(rest);
    out
}

/// `text` with the password of `url` (if it has one) masked wherever it
/// appears, and any `password=` masked.
fn mask_text(text: &str, url: &str) -> String {
    let out = mask_password_params(text);
    let config = tokio_postgres::Config::from_str(url).ok();
    match config.as_ref().and_then(|c| c.get_password()).and_then(|p| std::str::from_utf8(p).ok()) {
        Some(password) if !password.is_empty() => out.replace(password, "***"),
        _ => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_masked_wherever_it_is_given() {
        assert_eq!(mask_url("postgres://kiln:s3cret@db:5432/kiln"), "postgres://kiln:***@db:5432/kiln");
        assert_eq!(
            mask_url("postgres://kiln@db/kiln?password=s3cret&sslmode=require"),
            "postgres://kiln@db/kiln?password=***&sslmode=require"
        );
        assert_eq!(mask_url("postgres://db/kiln"), "postgres://db/kiln");
        assert_eq!(mask_url("nonsense:pw@x"), "nonsense:pw@x");
        let target = PgTarget::parse("postgres://kiln:s3cret@db/kiln?sslmode=require").unwrap();
        assert_eq!(target.to_string(), "postgres://kiln:***@db/kiln?sslmode=require");
        assert!(!format!("{target:?}").contains("s3cret"));
        assert_eq!(target.tls(), Tls::Require);
        assert_eq!(target.scrub("password s3cret refused"), "password *** refused");
    }

    #[test]
    fn bad_urls_are_refused_without_their_password() {
        let err = PgTarget::parse("postgres://kiln:s3cret@db/kiln?sslmode=bogus").unwrap_err();
        assert!(matches!(err, TargetError::Unusable { .. }), "{err:?}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let err = PgTarget::parse("mysql://kiln:s3cret@db").unwrap_err();
        assert_eq!(err, TargetError::NotPostgres("mysql://kiln:***@db".into()));
        assert!(matches!(PgTarget::parse("postgres:///kiln"), Err(TargetError::NoHost(_))));
    }
}
