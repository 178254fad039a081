//! Lists as Ironic pages them: `fields` or `detail` choose the fields,
//! `sort_key`/`sort_dir` the order, `limit`/`marker` the page, and a full
//! page carries a `next` link the clients follow (both clients page through
//! `next`; openstacksdk asks pages of its own size).

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::call::boolean;
use super::errors::ApiError;
use super::fields;

/// The most objects one page holds (Ironic's default `max_limit`).
pub const MAX_LIMIT: usize = 1000;

/// What a list request asks for.
pub struct ListParams {
    fields: Vec<String>,
    limit: usize,
    marker: Option<String>,
    sort_key: Option<String>,
    descending: bool,
    /// The query as given, to build the next page's link from.
    query: HashMap<String, String>,
}

impl ListParams {
    /// Reads `fields`, `detail` (or a `/detail` path), `limit`, `marker`,
    /// `sort_key`, `sort_dir`; `all` is every field, `short` those of a
    /// list without detail.
    pub fn of(
        query: &HashMap<String, String>,
        detail_path: bool,
        all: &[&str],
        short: &[&str],
    ) -> Result<ListParams, ApiError> {
        let detail = detail_path || query.get("detail").map(|v| boolean("detail", v)).transpose()?.unwrap_or(false);
        let asked = fields::requested(query.get("fields").map(String::as_str), all)?;
        if detail && asked.is_some() {
            return Err(ApiError::bad_request("Can not specify ?detail=True and fields in the same request."));
        }
        let fields = match asked {
            Some(f) => f,
            None if detail => all.iter().map(|s| s.to_string()).collect(),
            None => short.iter().map(|s| s.to_string()).collect(),
        };
        let limit = match query.get("limit") {
            None => MAX_LIMIT,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n < 0 => return Err(ApiError::bad_request(format!("Limit must be positive: {n}"))),
                Ok(0) => MAX_LIMIT,
                Ok(n) => (n as usize).min(MAX_LIMIT),
                Err(_) => return Err(ApiError::bad_request(format!("Invalid limit '{v}': expected an integer"))),
            },
        };
        let sort_key = match query.get("sort_key").map(String::as_str) {
            None | Some("id") => None,
            Some(k) if all.contains(&k) && !matches!(k, "links" | "ports" | "states") => Some(k.to_string()),
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "The sort_key value \"{k}\" is an invalid field for sorting"
                )));
            }
        };
        let descending = match query.get("sort_dir").map(String::as_str) {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(d) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid sort direction: {d}. Acceptable values are 'asc' or 'desc'"
                )));
            }
        };
        Ok(ListParams {
            fields,
            limit,
            marker: query.get("marker").cloned(),
            sort_key,
            descending,
            query: query.clone(),
        })
    }

    /// One page of `objects` (each with every field), under `collection`
    /// (`nodes`, `ports`), with a `next` link to `{base}{path}` when more follow.
    pub fn page(
        &self,
        mut objects: Vec<Map<String, Value>>,
        collection: &str,
        base: &str,
        path: &str,
    ) -> Result<Value, ApiError> {
        // Creation order by default (Ironic's `id`), then the uuid, so the
        // order is total and a marker is stable.
        let key = self.sort_key.as_deref().unwrap_or("created_at");
        objects.sort_by(|a, b| {
            let o = compare(a.get(key), b.get(key)).then_with(|| compare(a.get("uuid"), b.get("uuid")));
            if self.descending { o.reverse() } else { o }
        });
        let start = match &self.marker {
            None => 0,
            Some(m) => match objects.iter().position(|o| o.get("uuid").and_then(Value::as_str) == Some(m.as_str())) {
                Some(i) => i + 1,
                None => return Err(ApiError::bad_request(format!("Marker {m} could not be found."))),
            },
        };
        let rest = objects.len().saturating_sub(start);
        let taken: Vec<Map<String, Value>> = objects.into_iter().skip(start).take(self.limit).collect();
        let last = taken.last().and_then(|o| o.get("uuid")).and_then(Value::as_str).map(str::to_string);
        let shown: Vec<Value> = taken.into_iter().map(|o| fields::only(o, &self.fields)).collect();
        let mut out = Map::new();
        out.insert(collection.to_string(), Value::Array(shown));
        if rest > self.limit
            && let Some(last) = last
        {
            let mut q = self.query.clone();
            q.insert("limit".into(), self.limit.to_string());
            q.insert("marker".into(), last);
            let mut pairs: Vec<_> = q.into_iter().collect();
            pairs.sort();
            let qs: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
            out.insert("next".into(), json!(format!("{base}{path}?{}", qs.join("&"))));
        }
        Ok(Value::Object(out))
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            _ => 4,
        }
    }
    match (a, b) {
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal)
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Percent-encodes a query component.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(uuid: &str, name: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("uuid".into(), json!(uuid));
        m.insert("name".into(), json!(name));
        m.insert("created_at".into(), json!(uuid));
        m
    }

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn pages_follow_the_marker_and_end_without_next() {
        let all = &["uuid", "name", "created_at"];
        let objects = || vec![obj("c", "x"), obj("a", "z"), obj("b", "y")];
        let p = ListParams::of(&q(&[("limit", "2")]), false, all, &["uuid"]).unwrap();
        let first = p.page(objects(), "nodes", "http://h", "/v1/nodes").unwrap();
        assert_eq!(first["nodes"], json!([{"uuid": "a"}, {"uuid": "b"}]));
        assert_eq!(first["next"], "http://h/v1/nodes?limit=2&marker=b");
        let p = ListParams::of(&q(&[("limit", "2"), ("marker", "b")]), false, all, &["uuid"]).unwrap();
        let second = p.page(objects(), "nodes", "http://h", "/v1/nodes").unwrap();
        assert_eq!(second, json!({"nodes": [{"uuid": "c"}]}));
    }

    #[test]
    fn sorting_and_fields_and_bad_parameters() {
        let all = &["uuid", "name", "created_at"];
        let p = ListParams::of(&q(&[("sort_key", "name"), ("sort_dir", "desc"), ("fields", "name")]), false, all, &[])
            .unwrap();
        let page = p.page(vec![obj("a", "x"), obj("b", "z")], "nodes", "", "").unwrap();
        assert_eq!(page["nodes"], json!([{"name": "z"}, {"name": "x"}]));
        for bad in [("limit", "-1"), ("limit", "x"), ("sort_dir", "up"), ("sort_key", "bogus"), ("fields", "nope")] {
            assert!(ListParams::of(&q(&[bad]), false, all, &[]).is_err(), "{bad:?}");
        }
        let p = ListParams::of(&q(&[("marker", "nope")]), false, all, &[]).unwrap();
        assert!(p.page(vec![obj("a", "x")], "nodes", "", "").is_err());
    }
}
