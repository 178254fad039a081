//! Microversions and version discovery.
//!
//! Ironic's clients negotiate: python-ironicclient asks `GET /v1` for the
//! range and then uses the lower of its latest (1.115 in 6.3.0) and the
//! server's maximum; openstacksdk reads `GET /` and uses, per resource, the
//! lower of its own maximum (1.109 for nodes in 4.22) and the server's. kiln
//! serves 1.1 to [`MAX`] = 1.109: every verb the clients send (`unhold` came
//! in 1.85, `service` in 1.87) is inside it, and the newest node fields
//! openstacksdk knows are. Answers are the same at every version of the
//! range (kiln has one shape of each object); a request outside it gets
//! 406, as Ironic answers.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use serde_json::{Value, json};

use super::errors::ApiError;

/// A microversion `1.N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32);

/// The oldest microversion served.
pub const MIN: Version = Version(1, 1);
/// The newest microversion served.
pub const MAX: Version = Version(1, 109);

/// The header a client names its microversion in, and the server answers it.
pub const HEADER: &str = "X-OpenStack-Ironic-API-Version";
pub const MIN_HEADER: &str = "X-OpenStack-Ironic-API-Minimum-Version";
pub const MAX_HEADER: &str = "X-OpenStack-Ironic-API-Maximum-Version";

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

fn not_acceptable(message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_ACCEPTABLE, message)
}

/// Parses `1.N` or `latest`.
pub fn parse(text: &str) -> Result<Version, ApiError> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("latest") {
        return Ok(MAX);
    }
    let bad = || {
        not_acceptable(format!(
            "Invalid value for {HEADER} header: '{text}': expected MAJOR.MINOR or latest; the supported version range \
             is: [{MIN}, {MAX}]."
        ))
    };
    let (major, minor) = text.split_once('.').ok_or_else(bad)?;
    let v = Version(major.parse().map_err(|_| bad())?, minor.parse().map_err(|_| bad())?);
    if v < MIN || v > MAX {
        return Err(not_acceptable(format!(
            "Version {v} was requested but the minor version is not supported by this service. The supported \
             version range is: [{MIN}, {MAX}]."
        )));
    }
    Ok(v)
}

/// The microversion a request asks for: its `X-OpenStack-Ironic-API-Version`
/// header, else `OpenStack-API-Version: baremetal 1.N`, else [`MIN`] (as
/// Ironic takes a request that names none).
pub fn requested(headers: &HeaderMap) -> Result<Version, ApiError> {
    if let Some(v) = headers.get(HEADER) {
        return parse(v.to_str().map_err(|_| not_acceptable(format!("{HEADER} is not text")))?);
    }
    if let Some(v) = headers.get("OpenStack-API-Version").and_then(|v| v.to_str().ok())
        && let Some(rest) = v.trim().strip_prefix("baremetal ")
    {
        return parse(rest);
    }
    Ok(MIN)
}

fn link(href: String, rel: &str) -> Value {
    json!({"href": href, "rel": rel})
}

/// The description of version 1, as `GET /` and `GET /v1` give it.
fn v1_version(base: &str) -> Value {
    json!({
        "id": "v1",
        "links": [link(format!("{base}/v1/"), "self")],
        "status": "CURRENT",
        "min_version": MIN.to_string(),
        "version": MAX.to_string(),
    })
}

/// `GET /`: the versions served.
pub fn root(base: &str) -> Value {
    json!({
        "name": "OpenStack Ironic API",
        "description": "kiln serves the part of Ironic's API v1 that Ironic's own clients use.",
        "default_version": v1_version(base),
        "versions": [v1_version(base)],
    })
}

/// `GET /v1`: version 1's resources.
pub fn v1(base: &str) -> Value {
    let res =
        |name: &str| json!([link(format!("{base}/v1/{name}/"), "self"), link(format!("{base}/{name}/"), "bookmark")]);
    json!({
        "id": "v1",
        "links": [link(format!("{base}/v1/"), "self")],
        "media_types": [{"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"}],
        "nodes": res("nodes"),
        "ports": res("ports"),
        "drivers": res("drivers"),
        "version": v1_version(base),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_inside_the_range_pass_and_others_get_406() {
        assert_eq!(parse("1.1").unwrap(), MIN);
        assert_eq!(parse("latest").unwrap(), MAX);
        assert_eq!(parse("1.87").unwrap(), Version(1, 87));
        for bad in ["1.0", "1.110", "2.1", "1", "x.y", "", "1.-1"] {
            assert_eq!(parse(bad).unwrap_err().status, StatusCode::NOT_ACCEPTABLE, "{bad}");
        }
    }

    #[test]
    fn discovery_names_the_range() {
        let r = root("http://h:1");
        assert_eq!(r["default_version"]["version"], "1.109");
        assert_eq!(r["versions"][0]["min_version"], "1.1");
        assert_eq!(r["versions"][0]["links"][0]["href"], "http://h:1/v1/");
    }
}
