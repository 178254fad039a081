//! Validation of `driver_info`: every driver names the keys it knows, which
//! are required, and how each must look, so that `node create` and
//! `node set` refuse a bad node before anything is stored.

use std::collections::BTreeMap;

use crate::Kind;
use crate::error::InvalidDriverInfo;

/// How a value must look.
#[derive(Clone, Copy)]
enum Shape {
    Text,
    /// IPMI v2 passwords are at most 20 bytes (ipmitool refuses longer ones).
    IpmiPassword,
    /// `http://` or `https://` URL (Redfish address).
    HttpUrl,
    Host,
    Port,
    Bool,
    Seconds,
    Millis,
    /// A fraction between 0 and 1.
    Fraction,
    /// A path in the BMC's API, starting with `/`.
    ApiPath,
    Power,
    /// Which fake call panics.
    FakeCall,
    /// How the redfish driver authenticates: `basic`, `session` or `auto`.
    RedfishAuth,
}

struct Key {
    name: &'static str,
    required: bool,
    shape: Shape,
}

const fn key(name: &'static str, required: bool, shape: Shape) -> Key {
    Key { name, required, shape }
}

const FAKE: &[Key] = &[
    key("latency_ms", false, Shape::Millis),
    key("failure_rate", false, Shape::Fraction),
    key("panic_on", false, Shape::FakeCall),
    key("power", false, Shape::Power),
    key("address", false, Shape::Text),
    key("username", false, Shape::Text),
    key("password", false, Shape::Text),
];

const REDFISH: &[Key] = &[
    key("address", true, Shape::HttpUrl),
    key("system_id", false, Shape::ApiPath),
    key("username", false, Shape::Text),
    key("password", false, Shape::Text),
    key("verify_tls", false, Shape::Bool),
    key("ca_file", false, Shape::Text),
    // basic, session or auto (default auto): see the redfish module.
    key("auth_method", false, Shape::RedfishAuth),
    // Seconds per HTTP request (default 30).
    key("timeout", false, Shape::Seconds),
    // Seconds to wait for the TCP (and TLS) connection (default 3).
    key("connect_timeout", false, Shape::Seconds),
    // Seconds to wait for a power action to be reported done (default 60).
    key("power_timeout", false, Shape::Seconds),
];

const IPMI: &[Key] = &[
    key("address", true, Shape::Host),
    key("port", false, Shape::Port),
    key("username", false, Shape::Text),
    key("password", false, Shape::IpmiPassword),
    key("cipher_suite", false, Shape::Text),
    key("min_command_interval", false, Shape::Seconds),
    // Seconds per ipmitool run (default 20).
    key("timeout", false, Shape::Seconds),
    // Seconds to wait for the BMC's answer to a reachability probe (default 3).
    key("connect_timeout", false, Shape::Seconds),
    // Seconds to wait for a power action to be reported done (default 60).
    key("power_timeout", false, Shape::Seconds),
];

/// The values `auth_method` of the redfish driver may take; the first is the
/// default.
pub const REDFISH_AUTH_METHODS: &[&str] = &["auto", "basic", "session"];

/// The calls of the fake driver that `panic_on` may name.
pub const FAKE_CALLS: &[&str] = &["power", "set_power", "boot", "inspect", "any"];

fn keys_of(driver: &str) -> Result<(Kind, &'static [Key]), InvalidDriverInfo> {
    let kind = Kind::named(driver).ok_or_else(|| InvalidDriverInfo::UnknownDriver(driver.to_string()))?;
    let keys = match kind {
        Kind::Fake => FAKE,
        Kind::Redfish => REDFISH,
        Kind::Ipmi => IPMI,
    };
    Ok((kind, keys))
}

/// Checks a node's `driver_info` for its driver: every required key is
/// present, no unknown key, every value well formed.
pub fn validate(driver: &str, info: &BTreeMap<String, String>) -> Result<(), InvalidDriverInfo> {
    let (kind, keys) = keys_of(driver)?;
    for k in keys.iter().filter(|k| k.required) {
        if info.get(k.name).is_none_or(|v| v.trim().is_empty()) {
            return Err(InvalidDriverInfo::Missing { driver: driver.to_string(), field: k.name });
        }
    }
    for (name, value) in info {
        let Some(k) = keys.iter().find(|k| k.name == name) else {
            return Err(InvalidDriverInfo::Unknown {
                driver: driver.to_string(),
                field: name.clone(),
                known: keys.iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
            });
        };
        if let Err(why) = check_shape(k.shape, value) {
            // A secret is never echoed back, even when it is malformed.
            // Nor is a URL that may carry one (user:password@host).
            let hidden = name == "password" || (matches!(k.shape, Shape::HttpUrl) && value.contains('@'));
            let shown = if hidden { "******".to_string() } else { value.clone() };
            return Err(InvalidDriverInfo::Malformed { field: name.clone(), value: shown, why });
        }
    }
    // A Redfish session is opened with a user name: without one there is
    // nothing to log in with (`auto` then sends no credentials at all).
    if kind == Kind::Redfish
        && info.get("auth_method").is_some_and(|m| m == "session")
        && info.get("username").is_none_or(|u| u.is_empty())
    {
        return Err(InvalidDriverInfo::Malformed {
            field: "auth_method".into(),
            value: "session".into(),
            why: "session auth logs in with driver_info.username and password; set username".into(),
        });
    }
    Ok(())
}

fn check_shape(shape: Shape, value: &str) -> Result<(), String> {
    match shape {
        Shape::Text => Ok(()),
        Shape::IpmiPassword => {
            if value.len() <= 20 {
                Ok(())
            } else {
                Err("IPMI passwords are at most 20 bytes".into())
            }
        }
        Shape::HttpUrl => {
            let rest = value
                .strip_prefix("https://")
                .or_else(|| value.strip_prefix("http://"))
                .ok_or("expected http://host[:port] or https://host[:port]")?;
            let host = rest.split('/').next().unwrap_or("");
            if host.is_empty() {
                return Err("the URL has no host".into());
            }
            if host.contains('@') {
                return Err("put the user and password in username and password, not in the URL".into());
            }
            Ok(())
        }
        Shape::Host => {
            let ok = !value.is_empty()
                && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'));
            if ok { Ok(()) } else { Err("expected a host name or IP address".into()) }
        }
        Shape::Port => match value.parse::<u16>() {
            Ok(p) if p > 0 => Ok(()),
            _ => Err("expected a port number 1-65535".into()),
        },
        Shape::Bool => match value {
            "true" | "false" | "True" | "False" | "1" | "0" | "yes" | "no" => Ok(()),
            _ => Err("expected true or false".into()),
        },
        Shape::Seconds => match value.parse::<f64>() {
            Ok(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => Ok(()),
            _ => Err("expected a number of seconds between 0 and 3600".into()),
        },
        Shape::Millis => match value.parse::<u64>() {
            Ok(ms) if ms <= 600_000 => Ok(()),
            _ => Err("expected whole milliseconds between 0 and 600000".into()),
        },
        Shape::Fraction => match value.parse::<f64>() {
            Ok(f) if (0.0..=1.0).contains(&f) => Ok(()),
            _ => Err("expected a number between 0 and 1".into()),
        },
        Shape::ApiPath => {
            if value.starts_with('/') {
                Ok(())
            } else {
                Err("expected a path starting with /".into())
            }
        }
        Shape::Power => match value {
            "on" | "off" => Ok(()),
            _ => Err("expected on or off".into()),
        },
        Shape::FakeCall => {
            if FAKE_CALLS.contains(&value) {
                Ok(())
            } else {
                Err(format!("expected one of: {}", FAKE_CALLS.join(", ")))
            }
        }
        Shape::RedfishAuth => {
            if REDFISH_AUTH_METHODS.contains(&value) {
                Ok(())
            } else {
                Err(format!("expected one of: {}", REDFISH_AUTH_METHODS.join(", ")))
            }
        }
    }
}

/// Parses a boolean `driver_info` value that [`validate`] accepted.
pub fn parse_bool(value: &str) -> bool {
    matches!(value, "true" | "True" | "1" | "yes")
}

/// A duration in seconds from validated `driver_info`, or `default` when the
/// key is absent. A timeout of 0 would fail every call, so `positive` makes 0
/// mean the default too.
pub(crate) fn seconds(
    info: &BTreeMap<String, String>,
    key: &str,
    default: std::time::Duration,
    positive: bool,
) -> std::time::Duration {
    match info.get(key).and_then(|v| v.parse::<f64>().ok()) {
        Some(s) if s.is_finite() && s > 0.0 => std::time::Duration::from_secs_f64(s.min(3600.0)),
        Some(s) if s == 0.0 && !positive => std::time::Duration::ZERO,
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn redfish_needs_an_http_address() {
        let err = validate("redfish", &info(&[])).unwrap_err();
        assert_eq!(err.to_string(), "driver_info.address is required for the redfish driver");
        let err = validate("redfish", &info(&[("address", "ftp://x")])).unwrap_err();
        assert!(err.to_string().contains("driver_info.address = 'ftp://x'"), "{err}");
        validate("redfish", &info(&[("address", "https://10.0.0.1:8443"), ("verify_tls", "false")])).unwrap();
        let err = validate("redfish", &info(&[("address", "https://admin:hunter22@10.0.0.1")])).unwrap_err();
        assert!(!err.to_string().contains("hunter22"), "{err}");
        assert!(err.to_string().contains("username and password"), "{err}");
    }

    #[test]
    fn redfish_auth_method_is_basic_session_or_auto() {
        let base = [("address", "https://bmc"), ("username", "admin")];
        for method in ["basic", "session", "auto"] {
            let mut pairs = base.to_vec();
            pairs.push(("auth_method", method));
            validate("redfish", &info(&pairs)).unwrap();
        }
        let err = validate("redfish", &info(&[("address", "https://bmc"), ("auth_method", "Session")])).unwrap_err();
        assert!(err.to_string().contains("expected one of: auto, basic, session"), "{err}");
        let err = validate("redfish", &info(&[("address", "https://bmc"), ("auth_method", "session")])).unwrap_err();
        assert!(err.to_string().contains("driver_info.auth_method = 'session'"), "{err}");
        assert!(err.to_string().contains("set username"), "{err}");
        // Without a user, basic and auto send no credentials: allowed, as before.
        validate("redfish", &info(&[("address", "https://bmc"), ("auth_method", "auto")])).unwrap();
        let err = validate("ipmi", &info(&[("address", "h"), ("auth_method", "session")])).unwrap_err();
        assert!(err.to_string().contains("not a ipmi driver setting"), "{err}");
    }

    #[test]
    fn unknown_keys_and_drivers_are_named() {
        let err = validate("ipmi", &info(&[("address", "h"), ("prot", "623")])).unwrap_err();
        assert!(err.to_string().contains("driver_info.prot is not a ipmi driver setting"), "{err}");
        let err = validate("magic", &info(&[])).unwrap_err();
        assert!(err.to_string().contains("unknown driver 'magic'"));
    }

    #[test]
    fn a_too_long_ipmi_password_is_refused_without_showing_it() {
        let long = "p".repeat(21);
        let err = validate("ipmi", &info(&[("address", "h"), ("password", &long)])).unwrap_err();
        assert!(err.to_string().contains("at most 20 bytes"), "{err}");
        assert!(!err.to_string().contains(&long));
        validate("ipmi", &info(&[("address", "h"), ("password", &"p".repeat(20))])).unwrap();
    }

    #[test]
    fn malformed_values_are_explained() {
        let err = validate("ipmi", &info(&[("address", "h"), ("port", "70000")])).unwrap_err();
        assert!(err.to_string().contains("driver_info.port = '70000'"), "{err}");
        let fake = validate("fake", &info(&[("failure_rate", "2")])).unwrap_err();
        assert!(fake.to_string().contains("between 0 and 1"));
    }
}
