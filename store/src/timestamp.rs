//! Timestamps as kiln writes them: RFC 3339, UTC, nine fractional digits
//! (`2026-11-23T21:07:52.123456789Z`), in the store's columns and in the
//! job queue's JSON.
//!
//! Every job and node write formats several of them; chrono's general
//! formatter (and its serde path, one escaped `char` at a time) took about
//! a tenth of a job's instructions, so the common case (years 0000-9999, no
//! leap second) is written digit by digit here. The output is byte for byte
//! what `to_rfc3339_opts(Nanos, true)` gives, which remains the path for the
//! rare rest. Reading needs nothing special: any RFC 3339 text parses.

use chrono::{Datelike, SecondsFormat, Timelike};

use crate::Timestamp;

/// `at` as RFC 3339 text with nine fractional digits.
pub fn timestamp_text(at: Timestamp) -> String {
    with_timestamp(at, str::to_owned)
}

/// Appends `at` to `out` as [`timestamp_text`] writes it, for callers that
/// build a larger text (the job log column).
pub fn push_timestamp(out: &mut String, at: Timestamp) {
    with_timestamp(at, |text| out.push_str(text));
}

/// Hands `at`'s text to `f`, from a buffer on the stack in the common case
/// (a job's JSON holds several timestamps; this spares an allocation each).
pub fn with_timestamp<R>(at: Timestamp, f: impl FnOnce(&str) -> R) -> R {
    let general = || at.to_rfc3339_opts(SecondsFormat::Nanos, true);
    match common_form(at) {
        Some(text) => match std::str::from_utf8(&text) {
            Ok(text) => f(text),
            // Digits and separators only: not reached.
            Err(_) => f(&general()),
        },
        None => f(&general()),
    }
}

/// The text of a timestamp in years 0000-9999 outside a leap second,
/// written digit by digit; `None` for the rest.
fn common_form(at: Timestamp) -> Option<[u8; 30]> {
    let nanos = at.timestamp_subsec_nanos();
    if nanos >= 1_000_000_000 {
        return None;
    }
    let mut text = [0u8; 30];
    text[..20].copy_from_slice(&second_text(at.timestamp())?);
    digits(&mut text[20..29], nanos);
    text[29] = b'Z';
    Some(text)
}

thread_local! {
    /// The second [`second_text`] wrote last on this thread, and its text.
    /// The timestamps of one write nearly always share their second (a
    /// job's submission, start and end lines, a node's `updated_at` and
    /// history), and turning a second into a calendar date was most of the
    /// work of formatting one.
    static LAST_SECOND: std::cell::Cell<(i64, [u8; 20])> = const { std::cell::Cell::new((i64::MIN, [0; 20])) };
}

/// `YYYY-MM-DDTHH:MM:SS.` for `second` (seconds since the epoch), or `None`
/// outside years 0000-9999.
fn second_text(second: i64) -> Option<[u8; 20]> {
    let (last, text) = LAST_SECOND.get();
    if last == second {
        return Some(text);
    }
    let at = chrono::DateTime::from_timestamp(second, 0)?;
    let (date, time) = (at.date_naive(), at.time());
    let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    let mut text = [0u8; 20];
    digits(&mut text[0..4], year);
    text[4] = b'-';
    digits(&mut text[5..7], date.month());
    text[7] = b'-';
    digits(&mut text[8..10], date.day());
    text[10] = b'T';
    digits(&mut text[11..13], time.hour());
    text[13] = b':';
    digits(&mut text[14..16], time.minute());
    text[16] = b':';
    digits(&mut text[17..19], time.second());
    text[19] = b'.';
    LAST_SECOND.set((second, text));
    Some(text)
}

/// Serde helpers that write a timestamp with [`timestamp_text`] and read
/// any RFC 3339 text: `#[serde(with = "kiln_store::timestamp::rfc3339")]`.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::Timestamp;

    pub fn serialize<S: Serializer>(at: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        super::with_timestamp(*at, |text| s.serialize_str(text))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        Timestamp::deserialize(d)
    }

    /// The same for `Option<Timestamp>`:
    /// `#[serde(with = "kiln_store::timestamp::rfc3339::option")]`.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        use crate::Timestamp;

        pub fn serialize<S: Serializer>(at: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::super::with_timestamp(*at, |text| s.serialize_some(text)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            Option::<Timestamp>::deserialize(d)
        }
    }
}

/// Writes `value` as decimal digits filling `out`, zero-padded on the left.
fn digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};

    use super::*;

    fn chrono_text(at: Timestamp) -> String {
        at.to_rfc3339_opts(SecondsFormat::Nanos, true)
    }

    #[test]
    fn matches_chrono_across_the_range() {
        let mut seconds: i64 = -62_167_219_200; // 0000-01-01
        let mut nanos: u32 = 0;
        // A walk with odd steps through 0000..9999 and every digit position.
        for _ in 0..200_000 {
            let at = Utc.timestamp_opt(seconds, nanos).single().expect("in range");
            assert_eq!(timestamp_text(at), chrono_text(at));
            seconds += 1_576_800_017 / 1000;
            nanos = (nanos + 123_456_791) % 1_000_000_000;
        }
    }

    #[test]
    fn matches_chrono_on_every_day_of_the_years_whose_leap_rules_differ() {
        // Year 0 (a leap year, the first written here), century years
        // with and without a leap day, and the last year written here.
        for year in [0, 1, 4, 100, 1600, 1900, 1970, 2000, 2100, 2400, 9999] {
            let first = Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).single().expect("in range");
            for day in 0..366 {
                let midnight = first + chrono::Duration::days(day);
                for at in [midnight, midnight + chrono::Duration::nanoseconds(86_400_000_000_000 - 1)] {
                    if at.format("%Y").to_string() == format!("{year:04}") {
                        assert_eq!(timestamp_text(at), chrono_text(at));
                    }
                }
            }
        }
    }

    #[test]
    fn falls_back_outside_four_digit_years_and_on_leap_seconds() {
        let far = DateTime::from_timestamp(300_000_000_000, 5).expect("in range");
        assert_eq!(timestamp_text(far), chrono_text(far));
        let before = DateTime::from_timestamp(-63_000_000_000, 5).expect("in range");
        assert_eq!(timestamp_text(before), chrono_text(before));
        let leap = DateTime::from_timestamp(1_483_228_799, 1_500_000_000).expect("a leap second");
        assert_eq!(timestamp_text(leap), chrono_text(leap));
    }

    #[test]
    fn a_second_written_before_gives_the_same_text_as_a_new_one() {
        // Same second with other fractions, a neighbour, back again, then a
        // leap second and a year past 9999 right after a cached second.
        let base = 1_795_000_019; // a second 59, where a leap second may follow
        for (second, nanos) in
            [(base, 1), (base, 999_999_999), (base + 1, 0), (base, 5), (base - 86_400, 7), (base, 0), (base + 1, 3)]
        {
            let at = Utc.timestamp_opt(second, nanos).single().expect("in range");
            assert_eq!(timestamp_text(at), chrono_text(at), "{second}.{nanos}");
        }
        let leap = DateTime::from_timestamp(base, 1_500_000_000).expect("a leap second");
        assert_eq!(timestamp_text(leap), chrono_text(leap));
        let far = DateTime::from_timestamp(300_000_000_000, 5).expect("in range");
        assert_eq!(timestamp_text(far), chrono_text(far));
        let at = Utc.timestamp_opt(base, 42).single().expect("in range");
        assert_eq!(timestamp_text(at), chrono_text(at));
    }

    #[test]
    fn round_trips_through_the_reader() {
        let at = Utc::now();
        let parsed: Timestamp = DateTime::parse_from_rfc3339(&timestamp_text(at)).expect("rfc 3339").into();
        assert_eq!(parsed, at);
    }
}
