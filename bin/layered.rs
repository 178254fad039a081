//! Layered configuration: built-in defaults, then the TOML file, then
//! `KILN_<KEY>` environment variables, then flags. The last layer that sets
//! a key wins, and every key remembers where its value came from, so an
//! error names the file and key (`config /etc/kiln.toml: lock_wait: ...`),
//! the variable (`KILN_LOCK_WAIT: ...`) or the flag (`--lock-wait: ...`).
//!
//! Generic over the keys: the list of keys is read from the serde
//! definition of the config struct (its field names), so a key added to the
//! struct gets its environment variable, `--set KEY=VALUE`, unknown-key
//! suggestions and `--check-config` output with no other code.
//!
//! Every value is checked on its own, as it is read, by deserialising a
//! one-key table into the config struct: the error is then about that key
//! from that source, never a whole-file message to decode.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Serialize};

/// Where a key's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    /// A dedicated flag, e.g. `--lock-wait`.
    Flag(&'static str),
    /// `--set KEY=VALUE`.
    Set,
}

impl Source {
    /// How an error about `key` from this source starts.
    pub fn describe(&self, key: &str) -> String {
        match self {
            Source::Default => key.to_string(),
            Source::File(path) => format!("config {}: {key}", path.display()),
            Source::Env(var) => var.clone(),
            Source::Flag(flag) => (*flag).to_string(),
            Source::Set => format!("--set {key}"),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "config {}", path.display()),
            Source::Env(var) => f.write_str(var),
            Source::Flag(flag) => f.write_str(flag),
            Source::Set => f.write_str("--set"),
        }
    }
}

/// The environment variable of a key: `KILN_` and the key upper-cased
/// (`lock_wait` → `KILN_LOCK_WAIT`).
pub fn env_var(key: &str) -> String {
    format!("KILN_{}", key.to_ascii_uppercase())
}

/// The keys of a config struct: its serde field names, in declaration order.
pub fn keys<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that only records the field names a struct asks for.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only a struct has field names"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names only"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// One key's value and where it came from.
#[derive(Clone, Debug)]
pub struct Entry {
    pub value: toml::Value,
    pub source: Source,
}

/// The layers read so far, and every problem found in them.
pub struct Layers<T> {
    entries: BTreeMap<String, Entry>,
    errors: Vec<String>,
    _config: std::marker::PhantomData<T>,
}

/// A config after every layer: the typed struct and each key's source.
#[derive(Debug)]
pub struct Resolved<T> {
    pub value: T,
    pub entries: BTreeMap<String, Entry>,
}

impl<T> Resolved<T> {
    /// The source of a key (`Default` when no layer set it).
    pub fn source(&self, key: &str) -> Source {
        self.entries.get(key).map(|e| e.source.clone()).unwrap_or(Source::Default)
    }

    /// An error about a key's value, starting with where the value came from.
    pub fn invalid(&self, key: &str, message: impl fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{}: {message}", self.source(key).describe(key))
    }
}

impl<T: DeserializeOwned + Serialize> Layers<T> {
    /// Starts with the defaults: every key `defaults` sets.
    pub fn new(defaults: &T) -> Self {
        let mut layers = Layers { entries: BTreeMap::new(), errors: Vec::new(), _config: std::marker::PhantomData };
        match toml::Value::try_from(defaults) {
            Ok(toml::Value::Table(t)) => {
                for (key, value) in t {
                    layers.entries.insert(key, Entry { value, source: Source::Default });
                }
            }
            Ok(_) => layers.errors.push("the defaults are not a table".into()),
            Err(e) => layers.errors.push(format!("the defaults cannot be shown: {e}")),
        }
        layers
    }

    /// Adds a TOML file. A syntax error is reported with its line; each key
    /// is then checked on its own.
    pub fn file(&mut self, path: &Path) {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return self.errors.push(format!("config {}: cannot read it: {e}", path.display())),
        };
        let table: toml::Table = match toml::from_str(&text) {
            Ok(t) => t,
            Err(e) => {
                let e = e.to_string();
                return self.errors.push(format!("config {}: not valid TOML: {}", path.display(), e.trim_end()));
            }
        };
        for (key, value) in table {
            self.put(&key, value, Source::File(path.to_path_buf()));
        }
    }

    /// Adds `KILN_<KEY>` for every key, as `get` finds them (the process
    /// environment, or a map in tests).
    pub fn env(&mut self, get: impl Fn(&str) -> Option<String>) {
        for key in keys::<T>() {
            let var = env_var(key);
            if let Some(text) = get(&var) {
                self.text(key, &text, Source::Env(var));
            }
        }
    }

    /// Adds a value given as text (a flag or `--set`): read as a TOML value
    /// when it is one (`5`, `true`, `[1, 2]`, `{a = "x"}`), else as a string.
    pub fn text(&mut self, key: &str, text: &str, source: Source) {
        if !keys::<T>().contains(&key) {
            return self.unknown(key, &source);
        }
        let literal = toml::from_str::<toml::Table>(&format!("v = {text}")).ok().and_then(|mut t| t.remove("v"));
        let string = toml::Value::String(text.to_string());
        let error = match &literal {
            Some(v) => match check::<T>(key, v.clone()) {
                Ok(()) => return self.set(key, v.clone(), source),
                Err(e) => e,
            },
            None => String::new(),
        };
        match check::<T>(key, string.clone()) {
            Ok(()) => self.set(key, string, source),
            // A text that reads as a TOML value gets that value's error
            // (`-1`: "expected a non-negative integer"), others the string's.
            Err(e) => {
                let message = if literal.is_some() { error } else { e };
                self.errors.push(format!("{}: {message}", source.describe(key)));
            }
        }
    }

    /// Adds a flag's value.
    pub fn flag(&mut self, key: &str, value: toml::Value, flag: &'static str) {
        self.put(key, value, Source::Flag(flag));
    }

    /// Adds `--set KEY=VALUE` arguments.
    pub fn sets(&mut self, items: &[String]) {
        for item in items {
            match item.split_once('=') {
                Some((key, value)) => self.text(key.trim(), value.trim(), Source::Set),
                None => self.errors.push(format!("--set {item}: expected KEY=VALUE")),
            }
        }
    }

    fn put(&mut self, key: &str, value: toml::Value, source: Source) {
        if !keys::<T>().contains(&key) {
            return self.unknown(key, &source);
        }
        match check::<T>(key, value.clone()) {
            Ok(()) => self.set(key, value, source),
            Err(e) => self.errors.push(format!("{}: {e}", source.describe(key))),
        }
    }

    fn set(&mut self, key: &str, value: toml::Value, source: Source) {
        self.entries.insert(key.to_string(), Entry { value, source });
    }

    fn unknown(&mut self, key: &str, source: &Source) {
        let hint = match nearest(key, keys::<T>()) {
            Some(k) => format!(" (did you mean '{k}'?)"),
            None => String::new(),
        };
        let at = match source {
            Source::File(path) => format!("config {}", path.display()),
            Source::Set => "--set".into(),
            other => other.to_string(),
        };
        self.errors.push(format!("{at}: unknown key '{key}'{hint}; the keys are listed in docs/config.md"));
    }

    /// The typed config, or every problem found (one per line).
    pub fn resolve(self) -> Result<Resolved<T>, anyhow::Error> {
        if !self.errors.is_empty() {
            return Err(problems(self.errors));
        }
        let table: toml::Table = self.entries.iter().map(|(k, e)| (k.clone(), e.value.clone())).collect();
        let value = toml::Value::Table(table).try_into::<T>().map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        Ok(Resolved { value, entries: self.entries })
    }
}

/// One error, or a numbered list of them.
pub fn problems(errors: Vec<String>) -> anyhow::Error {
    if errors.len() == 1 {
        return anyhow::anyhow!("{}", errors[0]);
    }
    let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    anyhow::anyhow!("{} configuration problems:\n{}", errors.len(), list.join("\n"))
}

/// Checks one key's value by deserialising a table that holds only it.
fn check<T: DeserializeOwned>(key: &str, value: toml::Value) -> Result<(), String> {
    let mut table = toml::Table::new();
    table.insert(key.to_string(), value);
    toml::Value::Table(table).try_into::<T>().map(|_| ()).map_err(|e| plain(e.message()))
}

/// serde's type names said the way an operator reads them.
fn plain(message: &str) -> String {
    let mut m = message.to_string();
    for (rust, said) in [
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected u32", "expected a whole number, 0 or more"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        m = m.replace(rust, said);
    }
    m
}

/// The known key closest to a misspelt one, if any is close.
fn nearest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known.iter().map(|k| (edit_distance(key, k), *k)).filter(|(d, k)| *d <= 2.max(k.len() / 4)).min().map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j])).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// A duration in a config: seconds as a number (`30`, `1.5`) or a number
/// with a unit (`500ms`, `30s`, `5m`, `2h`, `1d`); at most a year.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub std::time::Duration);

const YEAR: f64 = 31_536_000.0;

impl Seconds {
    pub fn secs(s: u64) -> Self {
        Seconds(std::time::Duration::from_secs(s))
    }

    /// Reads `30`, `1.5`, `500ms`, `30s`, `5m`, `2h`, `1d`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let scale = match unit.trim() {
            "" | "s" => 1.0,
            "ms" => 0.001,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => f64::NAN,
        };
        match number.parse::<f64>() {
            Ok(n) if scale.is_finite() => Self::of(n * scale).ok_or_else(|| out_of_range(text)),
            _ => Err(format!(
                "invalid duration \"{text}\": expected seconds (30, 1.5) or a number with a unit (500ms, 30s, 5m, 2h, 1d)"
            )),
        }
    }

    fn of(seconds: f64) -> Option<Self> {
        (seconds.is_finite() && (0.0..=YEAR).contains(&seconds))
            .then(|| Seconds(std::time::Duration::from_secs_f64(seconds)))
    }
}

fn out_of_range(text: &str) -> String {
    format!("invalid duration \"{text}\": expected between 0 and a year (365d)")
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let (s, ms) = (d.as_secs(), d.subsec_nanos() as u64);
        if ms == 0 {
            match s {
                0 => f.write_str("0s"),
                s if s % 86400 == 0 => write!(f, "{}d", s / 86400),
                s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
                s if s % 60 == 0 => write!(f, "{}m", s / 60),
                s => write!(f, "{s}s"),
            }
        } else if ms % 1_000_000 == 0 {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}s", d.as_secs_f64())
        }
    }
}

impl Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: seconds (30, 1.5) or a number with a unit (500ms, 30s, 5m, 2h, 1d)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                Seconds::of(v as f64).ok_or_else(|| E::custom(out_of_range(&v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Seconds::of(v as f64).ok_or_else(|| E::custom(out_of_range(&v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Seconds::of(v).ok_or_else(|| E::custom(out_of_range(&v.to_string())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                Seconds::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        #[serde(skip_serializing_if = "Option::is_none")]
        lock_wait: Option<Seconds>,
        #[serde(skip_serializing_if = "Option::is_none")]
        fanout: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        uids: Option<Vec<u32>>,
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn keys_are_the_field_names() {
        assert_eq!(keys::<Demo>(), ["lock_wait", "fanout", "mode", "uids"]);
        assert_eq!(env_var("lock_wait"), "KILN_LOCK_WAIT");
    }

    #[test]
    fn durations_read_numbers_and_units_and_show_the_shortest_unit() {
        assert_eq!(Seconds::parse("30").unwrap(), Seconds::secs(30));
        assert_eq!(Seconds::parse("1.5").unwrap().0.as_millis(), 1500);
        assert_eq!(Seconds::parse("500ms").unwrap().0.as_millis(), 500);
        assert_eq!(Seconds::parse("5m").unwrap(), Seconds::secs(300));
        assert_eq!(Seconds::parse("2h").unwrap(), Seconds::secs(7200));
        assert_eq!(Seconds::parse("1d").unwrap(), Seconds::secs(86400));
        assert!(Seconds::parse("abc").unwrap_err().contains("invalid duration \"abc\""));
        assert!(Seconds::parse("5 parsecs").is_err());
        assert!(Seconds::parse("400d").unwrap_err().contains("a year"));
        for (d, shown) in [(0, "0s"), (45, "45s"), (120, "2m"), (7200, "2h"), (604800, "7d")] {
            assert_eq!(Seconds::secs(d).to_string(), shown);
        }
        assert_eq!(Seconds::parse("250ms").unwrap().to_string(), "250ms");
    }

    #[test]
    fn the_last_layer_wins_and_each_key_keeps_its_source() {
        let mut l = Layers::new(&Demo { fanout: Some(64), ..Default::default() });
        l.env(env(&[("KILN_FANOUT", "8"), ("KILN_MODE", "0660"), ("KILN_UIDS", "[1, 2]")]));
        l.text("lock_wait", "5s", Source::Flag("--lock-wait"));
        let r = l.resolve().unwrap();
        assert_eq!(r.value.fanout, Some(8));
        assert_eq!(r.value.mode.as_deref(), Some("0660"), "not a TOML value: a string");
        assert_eq!(r.value.uids, Some(vec![1, 2]));
        assert_eq!(r.value.lock_wait, Some(Seconds::secs(5)));
        assert_eq!(r.source("fanout"), Source::Env("KILN_FANOUT".into()));
        assert_eq!(r.source("lock_wait"), Source::Flag("--lock-wait"));
    }

    #[test]
    fn errors_name_the_source_and_the_key() {
        let mut l = Layers::new(&Demo::default());
        l.env(env(&[("KILN_LOCK_WAIT", "abc"), ("KILN_FANOUT", "-1")]));
        l.sets(&["fanuot=3".into(), "mode".into()]);
        let e = l.resolve().unwrap_err().to_string();
        assert!(e.starts_with("4 configuration problems"), "{e}");
        assert!(e.contains("KILN_LOCK_WAIT: invalid duration \"abc\""), "{e}");
        assert!(e.contains("KILN_FANOUT: "), "{e}");
        assert!(e.contains("--set: unknown key 'fanuot' (did you mean 'fanout'?)"), "{e}");
        assert!(e.contains("--set mode: expected KEY=VALUE"), "{e}");
    }
}
