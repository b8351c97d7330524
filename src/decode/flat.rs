//! A fast reader for the plain shape producers send: a flat JSON object of strings without
//! escapes, plain numbers, booleans and nulls. It gives what the serde reader would give, or
//! `None` so that the serde reader reads the message and words any error.

use std::borrow::Cow;

use super::{Field, RawMessage, Scalar};

/// The message's fields, when it is a flat object in the plain shape and names no field twice.
pub(super) fn read(value: &[u8]) -> Option<RawMessage<'_>> {
    // Checked once for the whole message: every slice below starts and ends at an ASCII byte.
    let text = std::str::from_utf8(value).ok()?;
    let mut r = Reader { text, at: 0 };
    let mut raw = RawMessage::default();
    r.skip_space();
    r.eat(b'{')?;
    r.skip_space();
    if r.eat(b'}').is_none() {
        loop {
            r.skip_space();
            let key = r.string()?;
            r.skip_space();
            r.eat(b':')?;
            r.skip_space();
            let value = r.scalar()?;
            // A field named twice is an error, which serde words.
            if let Some(slot) = raw.slot(&Field::of(key)) {
                if slot.replace(value).is_some() {
                    return None;
                }
            }
            r.skip_space();
            match r.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    r.skip_space();
    (r.at == text.len()).then_some(raw)
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, expected: u8) -> Option<()> {
        (self.peek()? == expected).then(|| self.at += 1)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// The bytes from here while `keep` holds them.
    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.at;
        while self.peek().is_some_and(&keep) {
            self.at += 1;
        }
        &self.text[start..self.at]
    }

    /// A string with no escape and no control character.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let s = self.take_while(|b| b != b'"' && b != b'\\' && b >= 0x20);
        self.eat(b'"')?;
        Some(s)
    }

    fn scalar(&mut self) -> Option<Scalar<'a>> {
        match self.peek()? {
            b'"' => Some(Scalar::Str(Cow::Borrowed(self.string()?))),
            b'-' | b'0'..=b'9' => self.number(),
            _ => {
                let word = self.take_while(|b| b.is_ascii_lowercase());
                match word {
                    "null" => Some(Scalar::Null),
                    "true" | "false" => Some(Scalar::Other("a boolean")),
                    _ => None,
                }
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)?`, as serde_json reads it: an integer, except `-0`, or
    /// the nearest float (both round correctly). Up to 18 integer digits, so that an integer
    /// cannot overflow; longer ones, and exponents (which stop the object here), go to serde.
    fn number(&mut self) -> Option<Scalar<'a>> {
        let start = self.at;
        let negative = self.eat(b'-').is_some();
        let int = self.take_while(|b| b.is_ascii_digit());
        if int.is_empty() || (int.len() > 1 && int.starts_with('0')) || int.len() > 18 {
            return None;
        }
        let fraction = self.eat(b'.').is_some();
        if fraction && self.take_while(|b| b.is_ascii_digit()).is_empty() {
            return None;
        }
        if fraction {
            return self.text[start..self.at].parse().ok().map(Scalar::Float);
        }
        let magnitude: i128 = int.parse().ok()?;
        Some(match (negative, magnitude) {
            (true, 0) => Scalar::Float(-0.0),
            (true, m) => Scalar::Int(-m),
            (false, m) => Scalar::Int(m),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What the serde reader makes of `value`, written out exactly (`-0.0` is not `0.0`).
    fn by_serde(value: &[u8]) -> Option<String> {
        serde_json::from_slice::<RawMessage>(value)
            .ok()
            .map(|raw| format!("{raw:?}"))
    }

    fn agree(value: &[u8]) -> Result<(), TestCaseError> {
        if let Some(raw) = read(value) {
            prop_assert_eq!(
                Some(format!("{raw:?}")),
                by_serde(value),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
        Ok(())
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "transaction_id",
                "customer_id",
                "terminal_id",
                "amount",
                "timestamp",
                "label",
                "labelled_at",
            ])
            .prop_map(|k| format!("\"{k}\"")),
            "\"[a-z_]{0,12}\"",
            // Escaped, non-ASCII, or not a string at all.
            Just(r#""customer\u005fid""#.to_string()),
            Just("\"amoünt\"".to_string()),
            Just("amount".to_string()),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "\"[ -~]{0,10}\"",
            "\"[a-z0-9é\\\\\"\n\u{1}-]{0,8}\"",
            "-?(0|[1-9][0-9]{0,21})",
            "-?0[0-9]{1,3}",
            "-?[0-9]{1,4}\\.[0-9]{0,40}",
            "-?[0-9]{1,3}(\\.[0-9]{1,3})?[eE][+-]?[0-9]{1,3}",
            "null|true|false|nul|True|nan|-|\\.5",
            "\\[[0-9, ]{0,6}\\]",
            "\\{\\}|\\{\"a\": ?1\\}",
        ]
    }

    /// JSON whitespace, mostly none.
    fn space() -> impl Strategy<Value = String> {
        "( |\t|\n|\r|){0,2}"
    }

    fn message() -> impl Strategy<Value = String> {
        let member = (space(), key(), space(), space(), value(), space())
            .prop_map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"));
        (
            space(),
            prop::collection::vec(member, 0..8),
            space(),
            "(|||| |x|,|\\})",
        )
            .prop_map(|(before, members, inside, after)| {
                format!("{before}{{{inside}{}}}{after}", members.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Whatever the fast reader reads, serde reads the same; everything else goes to serde.
        #[test]
        fn reads_what_serde_reads(m in message()) {
            agree(m.as_bytes())?;
        }

        /// The same, one byte changed, removed or added anywhere.
        #[test]
        fn reads_what_serde_reads_after_an_edit(
            m in message(),
            at in any::<prop::sample::Index>(),
            edit in 0..3u8,
            byte in prop_oneof![
                prop::sample::select(b"{}[],:\"\\ -.+0123456789eEtnfuZ".to_vec()),
                any::<u8>(),
            ],
        ) {
            let mut bytes = m.into_bytes();
            let i = at.index(bytes.len() + 1);
            match edit {
                0 if i < bytes.len() => bytes[i] = byte,
                1 if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => bytes.insert(i, byte),
            }
            agree(&bytes)?;
        }
    }

    /// The shapes producers send are read here, not by serde: the documented example, the load
    /// generator's, integer ids and epoch milliseconds, a label.
    #[test]
    fn reads_the_plain_shapes() {
        for value in [
            br#"{"transaction_id": "tx-1", "customer_id": "c-42", "terminal_id": "t-7", "amount": 57.16, "timestamp": "2026-11-26T03:44:58.123Z"}"#.as_slice(),
            // As txsim's `write_transaction` writes it for the load generator and the demo.
            br#"{"transaction_id":"lg-r-1","customer_id":"c-42","terminal_id":"t-7","amount":57.16,"timestamp":"2026-11-26T03:44:58.123Z"}"#,
            // As the engine bench's population writes it: numbers right-aligned with spaces.
            br#"{"transaction_id":"tx-0000000001","customer_id":"c-0000042","terminal_id":"t-00042","amount":      57.16,"timestamp":1795664698123}"#,
            b" {\"transaction_id\":17,\"customer_id\":-42,\"amount\":1,\"timestamp\":946684800000,\"terminal_id\":null,\"note\":true}\n",
            br#"{"transaction_id":"tx-1","customer_id":"c-42","terminal_id":"t-7","timestamp":"2026-11-26T03:44:58Z","label":"fraud","labelled_at":"2026-11-27T00:00:00Z"}"#,
            b"{}",
        ] {
            let raw = read(value).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(value)));
            assert_eq!(Some(format!("{raw:?}")), by_serde(value));
        }
    }
}
