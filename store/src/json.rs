//! JSON strings written by hand, for the texts written at every job change:
//! the SQLite backend's job log column and the actors' job body. The output is byte for
//! byte what `serde_json` writes for the same value, so either side reads
//! what the other wrote; a general encoder pays for a string's escaping
//! through its serializer traits, which was a tenth of a job's work.

/// Appends `text` as a JSON string, escaped as `serde_json` escapes it:
/// `"` and `\\`, and control characters as `\n`-style or `\u00XX`.
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    // Most texts need no escape: one pass without branches tells.
    if !text.bytes().fold(false, |any, b| any | (b < 0x20) | (b == b'"') | (b == b'\\')) {
        out.push_str(text);
        out.push('"');
        return;
    }
    let mut clean = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // Every byte escaped is ASCII, so `i` is a character boundary.
        out.push_str(&text[clean..i]);
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escaped);
        }
        clean = i + 1;
    }
    out.push_str(&text[clean..]);
    out.push('"');
}

/// Appends `value` in decimal, as JSON writes an unsigned integer.
pub fn push_u64(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut first = digits.len();
    loop {
        first -= 1;
        digits[first] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend(digits[first..].iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_numbers_are_written_as_serde_json_writes_them() {
        let texts = ["", "plain text", "é ü 日本", "\"", "\\", "a\u{0}b\u{1f}c\u{7f}", "\n\r\t\u{8}\u{c}", "</script>"];
        for text in texts {
            let mut out = String::new();
            push_json_string(&mut out, text);
            assert_eq!(out, serde_json::to_string(text).unwrap());
        }
        for value in [0, 7, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, value);
            assert_eq!(out, value.to_string());
        }
    }
}
