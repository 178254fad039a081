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
    /// What tokio-postgres is given: the URL without the parameters it does
    /// not know (`sslmode=verify-full`, `sslrootcert`).
    url: String,
    masked: String,
    tls: Tls,
    /// `sslrootcert`: the CA certificates (PEM) a `verify-full` server's
    /// certificate must chain to.
    root_cert: Option<std::path::PathBuf>,
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
    /// `sslmode=verify-full`: TLS, with the server's certificate checked
    /// against the CA certificates of `sslrootcert` and the host name (or
    /// address) the URL names, as libpq's.
    VerifyFull,
}

impl PgTarget {
    /// Parses `text`; the error names what is wrong, never the password.
    pub fn parse(text: &str) -> Result<PgTarget, TargetError> {
        let masked = mask_url(text);
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(TargetError::NotPostgres(masked));
        }
        let (text, verify_full, root_cert) = split_tls_params(text, &masked)?;
        let text = text.as_str();
        let config = match tokio_postgres::Config::from_str(text) {
            Ok(config) => config,
            Err(e) => return Err(TargetError::Unusable { why: mask_text(&e.to_string(), text), url: masked }),
        };
        if config.get_hosts().is_empty() {
            return Err(TargetError::NoHost(masked));
        }
        let tls = match config.get_ssl_mode() {
            _ if verify_full => Tls::VerifyFull,
            tokio_postgres::config::SslMode::Disable => Tls::Disable,
            tokio_postgres::config::SslMode::Require => Tls::Require,
            _ => Tls::Prefer,
        };
        Ok(PgTarget { url: text.to_string(), masked, tls, root_cert })
    }

    /// `sslrootcert`, for `verify-full`.
    pub fn root_cert(&self) -> Option<&std::path::Path> {
        self.root_cert.as_deref()
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

/// Takes `sslmode=verify-full` and `sslrootcert=PATH` out of a URL's
/// query (tokio-postgres knows neither): returns the URL left, asking for
/// `sslmode=require` instead, whether `verify-full` was asked for, and the
/// path. `verify-ca` is refused (kiln checks the host too, or nothing), and
/// so is `verify-full` without `sslrootcert`.
fn split_tls_params(text: &str, masked: &str) -> Result<(String, bool, Option<std::path::PathBuf>), TargetError> {
    let unusable = |why: &str| TargetError::Unusable { url: masked.to_string(), why: why.to_string() };
    let Some((base, query)) = text.split_once('?') else {
        return Ok((text.to_string(), false, None));
    };
    let (mut kept, mut verify_full, mut root) = (Vec::new(), false, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", "verify-full")) => {
                verify_full = true;
                kept.push("sslmode=require".to_string());
            }
            Some(("sslmode", "verify-ca")) => {
                return Err(unusable("sslmode=verify-ca is not supported; use verify-full (it checks the host too)"));
            }
            Some(("sslrootcert", path)) => root = Some(std::path::PathBuf::from(path)),
            _ => kept.push(pair.to_string()),
        }
    }
    if verify_full && root.is_none() {
        return Err(unusable("sslmode=verify-full needs sslrootcert=PATH (the CA certificates, PEM)"));
    }
    if !verify_full && root.is_some() {
        return Err(unusable("sslrootcert is used with sslmode=verify-full only"));
    }
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, verify_full, root))
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
        let full =
            PgTarget::parse("postgres://kiln:s3cret@db/kiln?sslmode=verify-full&sslrootcert=/etc/ca.pem").unwrap();
        assert_eq!(full.tls(), Tls::VerifyFull);
        assert_eq!(full.root_cert(), Some(std::path::Path::new("/etc/ca.pem")));
        for (url, why) in [
            ("postgres://kiln:s3cret@db/kiln?sslmode=verify-full", "needs sslrootcert"),
            ("postgres://kiln:s3cret@db/kiln?sslmode=verify-ca&sslrootcert=/ca", "verify-ca is not supported"),
            ("postgres://kiln:s3cret@db/kiln?sslrootcert=/ca", "with sslmode=verify-full only"),
        ] {
            let err = PgTarget::parse(url).unwrap_err().to_string();
            assert!(err.contains(why) && !err.contains("s3cret"), "{url}: {err}");
        }
        let err = PgTarget::parse("postgres://kiln:s3cret@db/kiln?sslmode=bogus").unwrap_err();
        assert!(matches!(err, TargetError::Unusable { .. }), "{err:?}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let err = PgTarget::parse("mysql://kiln:s3cret@db").unwrap_err();
        assert_eq!(err, TargetError::NotPostgres("mysql://kiln:***@db".into()));
        assert!(matches!(PgTarget::parse("postgres:///kiln"), Err(TargetError::NoHost(_))));
    }
}
