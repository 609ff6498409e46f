//! Hand-written decoding of the fixed request shapes of the hottest JSON endpoints (`/tl/st`,
//! every transaction's start, in [`super::transactions`]; the lock requests of `/tl/l` and
//! `/tl/wl`, in [`super::lock`]; and the token lists of `/tl/ul2` and `/tl/rl2`, here), with
//! serde as the definition and the fallback.
//!
//! Why: serde_json decodes a start-transactions body generically — each key and string is
//! scanned for escapes and validated as UTF-8, field names are matched through a visitor — which
//! is a visible share of the request's work in profiles. These bodies are small and always
//! shaped alike (Jackson writes them compactly, fields in declaration order).
//!
//! How it stays right: [`Decode::decode_fast`] accepts only a strict subset of JSON — ASCII
//! only, no escapes, integers without fraction or exponent, each known field at most once and
//! no unknown ones — and answers `None` for anything else, which then goes to serde unchanged
//! (so every error message, and every unusual but valid body, is serde's). On the subset both
//! must agree; the tests below compare them on generated bodies.

use serde::de::DeserializeOwned;
use uuid::Uuid;

/// A request type with a strict fast decoder (see the module docs).
pub trait Decode: DeserializeOwned {
    /// The value, if `body` is in the strict subset; `None` means "ask serde" (always, for a
    /// type without a strict decoder).
    fn decode_fast(_body: &[u8]) -> Option<Self> {
        None
    }
}

/// Request body types decoded by serde alone.
macro_rules! decoded_by_serde {
    ($($t:ty),* $(,)?) => { $(impl $crate::http::wire::decode::Decode for $t {})* };
}
pub(crate) use decoded_by_serde;

decoded_by_serde!(
    i64,
    Vec<String>,
    Vec<crate::transactions::LockToken>,
    std::collections::BTreeMap<String, Vec<String>>,
    std::collections::BTreeMap<String, Vec<Uuid>>,
    crate::operations::migration::Migration,
);

/// A cursor over a body in the strict subset.
pub struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Skips JSON whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next non-whitespace byte, consumed.
    pub fn next_byte(&mut self) -> Option<u8> {
        self.ws();
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// Consumes `byte` (after whitespace) or fails.
    pub fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next_byte()? == byte).then_some(())
    }

    /// The raw bytes of a string without escapes, its quotes consumed. Not validated further:
    /// callers compare them with known ASCII keys or parse them as a UUID, which anything
    /// unusual fails.
    pub fn plain_string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let rest = self.bytes.get(self.at..)?;
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] != b'"' {
            return None;
        }
        self.at += end + 1;
        Some(&rest[..end])
    }

    /// A UUID string, as `Uuid`'s own deserializer would accept it: the hyphenated form that
    /// clients send by hand, any other form `Uuid` parses through it.
    pub fn uuid(&mut self) -> Option<Uuid> {
        // The usual case without searching for the closing quote: 36 bytes that parse as the
        // hyphenated form between quotes (none of them a quote or a backslash, as no hex digit
        // or hyphen is).
        self.ws();
        if let Some(quoted) = self.bytes.get(self.at..self.at + 38) {
            if quoted[0] == b'"' && quoted[37] == b'"' {
                if let Some(id) = hyphenated(&quoted[1..37]) {
                    self.at += 38;
                    return Some(id);
                }
            }
        }
        let text = self.plain_string()?;
        hyphenated(text).or_else(|| Uuid::try_parse_ascii(text).ok())
    }

    /// An integer in JSON's grammar (no fraction, no exponent) that fits an `i64`.
    pub fn i64(&mut self) -> Option<i64> {
        self.ws();
        let negative = self.bytes.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        let digits = self.at;
        let mut magnitude: i64 = 0;
        while let Some(&b) = self.bytes.get(self.at).filter(|b| b.is_ascii_digit()) {
            // Accumulated negatively, so that i64::MIN fits.
            magnitude = magnitude
                .checked_mul(10)?
                .checked_sub(i64::from(b - b'0'))?;
            self.at += 1;
        }
        let count = self.at - digits;
        // No leading zeros; and no `-0`, which serde_json reads as a float.
        if count == 0 || (self.bytes[digits] == b'0' && (count > 1 || negative)) {
            return None;
        }
        if matches!(self.bytes.get(self.at), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        if negative {
            Some(magnitude)
        } else {
            magnitude.checked_neg()
        }
    }

    /// `null`, consumed.
    pub fn null(&mut self) -> Option<()> {
        self.ws();
        let rest = self.bytes.get(self.at..)?;
        if rest.starts_with(b"null") {
            self.at += 4;
            // `nullx` is not a literal; whatever follows must be a separator.
            return match self.bytes.get(self.at) {
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') => Some(()),
                _ => None,
            };
        }
        None
    }

    /// Whether the next non-whitespace byte is `byte` (not consumed).
    pub fn peek_is(&mut self, byte: u8) -> bool {
        self.ws();
        self.bytes.get(self.at) == Some(&byte)
    }

    /// The members of an object: calls `member` with each key (the scanner then at its value)
    /// until the closing brace. `member` answers `None` to give up.
    pub fn object(&mut self, mut member: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.peek_is(b'}') {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.plain_string()?;
            self.expect(b':')?;
            member(self, key)?;
            match self.next_byte()? {
                b',' => continue,
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// The elements of an array: calls `element` with the scanner at each element until the
    /// closing bracket. `element` answers `None` to give up.
    pub fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.expect(b'[')?;
        if self.peek_is(b']') {
            self.at += 1;
            return Some(());
        }
        loop {
            element(self)?;
            match self.next_byte()? {
                b',' => continue,
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// Consumes exactly `text` at the cursor (no whitespace skipped) or fails.
    pub fn literal(&mut self, text: &[u8]) -> Option<()> {
        let rest = self.bytes.get(self.at..)?;
        rest.starts_with(text).then(|| self.at += text.len())
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Option<()> {
        self.ws();
        (self.at == self.bytes.len()).then_some(())
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex of either case, else `None` (which
/// [`Scanner::uuid`] then hands to `Uuid`'s own parser). Eight digits at a time in a `u64`
/// (cheaper than a table lookup per digit or `Uuid`'s own parser, which matters because a UUID
/// is parsed three times per start-transactions request, counting the release of its lock).
fn hyphenated(text: &[u8]) -> Option<Uuid> {
    let text: &[u8; 36] = text.try_into().ok()?;
    if text[8] != b'-' || text[13] != b'-' || text[18] != b'-' || text[23] != b'-' {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(text[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| {
        u64::from(u32::from_le_bytes(
            text[at..at + 4].try_into().expect("4 bytes"),
        ))
    };
    let groups = [
        u64_at(0),
        u32_at(9) | u32_at(14) << 32,
        u32_at(19) | u32_at(24) << 32,
        u64_at(28),
    ];
    let mut bytes = [0u8; 16];
    for (out, group) in bytes.chunks_exact_mut(4).zip(groups) {
        out.copy_from_slice(&hex8(group)?.to_le_bytes());
    }
    Some(Uuid::from_bytes(bytes))
}

/// Eight ASCII hex digits (the first in the lowest byte) as four bytes (the first digit pair in
/// the lowest), or `None` if any is not a hex digit. Each byte lane is checked and converted at
/// once: no lane carries into the next, as every lane is below 0x80 before each addition.
#[inline]
fn hex8(x: u64) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if x & HIGH != 0 {
        return None; // not ASCII
    }
    // Per lane, bit 7 of `x + (0x80 - k)` is set exactly when the lane is at least `k`.
    let at_least = |v: u64, k: u64| v.wrapping_add((0x80 - k) * ONES) & HIGH;
    let digit = at_least(x, b'0' as u64) & !at_least(x, b'9' as u64 + 1);
    let lower = x | (0x20 * ONES); // 'A'..'F' to 'a'..'f' (digits are unchanged below 'a')
    let letter = at_least(lower, b'a' as u64) & !at_least(lower, b'f' as u64 + 1);
    if (digit | letter) != HIGH {
        return None;
    }
    // A digit's value is its low nibble; a letter's is its low nibble plus 9 (bit 6 marks it).
    let values = (x & (0x0f * ONES)) + ((x >> 6) & ONES) * 9;
    // Each 16-bit lane: first digit in its low byte, second in its high byte -> one byte.
    let pairs = ((values & 0x000f_000f_000f_000f) << 4) | ((values >> 8) & 0x000f_000f_000f_000f);
    let packed = (pairs & 0xff)
        | ((pairs >> 8) & 0xff00)
        | ((pairs >> 16) & 0x00ff_0000)
        | ((pairs >> 24) & 0xff00_0000);
    Some(packed as u32)
}

/// `["<uuid>", ...]`: lock tokens (`/tl/ul2`, `/tl/rl2`; a start-transactions client releases
/// its immutable-timestamp locks 64 at a time).
impl Decode for Vec<Uuid> {
    fn decode_fast(body: &[u8]) -> Option<Self> {
        let mut s = Scanner::new(body);
        // 39 bytes per quoted token and comma.
        let mut tokens = Vec::with_capacity(body.len() / 39 + 1);
        s.array(|s| {
            tokens.push(s.uuid()?);
            Some(())
        })?;
        s.end()?;
        Some(tokens)
    }
}

/// Sets `slot` once; a second value for the same field gives up (serde calls it an error).
pub fn once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value?);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::super::transactions::StartTransactionsRequest;
    use super::*;
    use proptest::prelude::*;

    fn serde_decode<T: DeserializeOwned>(body: &str) -> Option<T> {
        serde_json::from_str(body).ok()
    }

    #[test]
    fn clients_bodies_take_the_fast_path() {
        let id = "6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b";
        for body in [
            format!(r#"{{"requestId":"{id}","requestorId":"{id}","numTransactions":1}}"#),
            format!(
                r#"{{"requestId":"{id}","requestorId":"{id}","numTransactions":5,"lastKnownVersion":null}}"#
            ),
            format!(
                r#"{{"requestId":"{id}","requestorId":"{id}","numTransactions":5,"lastKnownVersion":{{"id":"{id}","version":-1}}}}"#
            ),
            format!(
                "{{ \"numTransactions\" : 2 ,\n \"requestorId\":\"{id}\", \"requestId\":\"{id}\" }} \n"
            ),
        ] {
            let fast = StartTransactionsRequest::decode_fast(body.as_bytes());
            assert!(fast.is_some(), "{body}");
            assert_eq!(fast, serde_decode(&body), "{body}");
        }
    }

    /// Mostly valid UUID texts, in every format `Uuid` parses, and some that are not.
    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            24 => Just("6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b".to_string()),
            1 => Just("6F1C2A4E5B7D4E0F8A9B0C1D2E3F4A5B".to_string()),
            1 => Just("{6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b}".to_string()),
            1 => Just("urn:uuid:6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b".to_string()),
            1 => Just("6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5".to_string()),
            1 => Just("nope".to_string()),
            1 => Just(String::new()),
            1 => Just("6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5\\u0062".to_string()),
            1 => Just("é".to_string()),
        ]
    }

    /// Mostly integers, and what is not one in JSON or not an `i64`.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            30 => (-3i64..20).prop_map(|n| n.to_string()),
            1 => Just("-0".to_string()),
            1 => Just("01".to_string()),
            1 => Just("1.0".to_string()),
            1 => Just("1e2".to_string()),
            1 => Just("-".to_string()),
            1 => Just("9223372036854775807".to_string()),
            1 => Just("-9223372036854775808".to_string()),
            1 => Just("9223372036854775808".to_string()),
            1 => Just("\"3\"".to_string()),
            1 => Just("null".to_string()),
            1 => Just("true".to_string()),
        ]
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            8 => Just(""),
            1 => Just(" "),
            1 => Just("\n\t"),
            1 => Just("\r "),
            1 => Just("\u{a0}"),
        ]
    }

    fn version() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => Just("null".to_string()),
            1 => Just("nul".to_string()),
            1 => Just("nullx".to_string()),
            1 => Just("{}".to_string()),
            6 => (token(), number(), any::<bool>(), ws()).prop_map(|(t, n, swap, w)| {
                if swap {
                    format!("{{{w}\"version\"{w}:{w}{n},\"id\":\"{t}\"}}")
                } else {
                    format!("{{\"id\":{w}\"{t}\",\"version\":{n}{w}}}")
                }
            }),
            1 => (token(), number()).prop_map(|(t, n)| {
                format!("{{\"id\":\"{t}\",\"version\":{n},\"id\":\"{t}\"}}")
            }),
            1 => (token(), number()).prop_map(|(t, n)| {
                format!("{{\"id\":\"{t}\",\"version\":{n},\"other\":1}}")
            }),
        ]
    }

    /// Start-transactions bodies: the three required fields (and often `lastKnownVersion`) in
    /// any order, sometimes one dropped, one repeated, or an unknown or escaped key added.
    fn body() -> impl Strategy<Value = String> {
        let members = (
            token(),
            token(),
            number(),
            prop::option::of(version()),
            prop_oneof![
                6 => Just(None),
                1 => Just(Some(r#""extra":[1,{"a":null}]"#.to_string())),
                1 => Just(Some(r#""request\u0049d":"6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b""#.to_string())),
                1 => Just(Some(r#""numTransactions":1"#.to_string())),
            ],
            0usize..12,
        )
            .prop_map(|(a, b, n, v, extra, drop)| {
                let mut m = vec![
                    format!("\"requestId\":\"{a}\""),
                    format!("\"requestorId\":\"{b}\""),
                    format!("\"numTransactions\":{n}"),
                ];
                if let Some(v) = v {
                    m.push(format!("\"lastKnownVersion\":{v}"));
                }
                if let Some(e) = extra {
                    m.push(e);
                }
                if drop < m.len() && drop % 3 == 0 {
                    m.remove(drop);
                }
                m
            })
            .prop_shuffle();
        (
            members,
            ws(),
            prop_oneof![4 => Just(""), 1 => Just(" \n"), 1 => Just("x"), 1 => Just("}")],
        )
            .prop_map(|(members, w, tail)| {
                let members: Vec<String> = members
                    .iter()
                    .map(|m| {
                        let (k, v) = m.split_once(':').unwrap();
                        format!("{w}{k}{w}:{w}{v}{w}")
                    })
                    .collect();
                format!("{w}{{{}}}{w}{tail}", members.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Whatever the fast decoder accepts, serde decodes to the same value.
        #[test]
        fn fast_decoding_agrees_with_serde(body in body()) {
            if let Some(fast) = StartTransactionsRequest::decode_fast(body.as_bytes()) {
                prop_assert_eq!(Some(fast), serde_decode::<StartTransactionsRequest>(&body), "{}", body);
            }
        }
    }

    /// Token lists (`/tl/ul2`, `/tl/rl2`): tokens from [`token`], whitespace, empty lists,
    /// trailing commas, nesting and trailing bytes.
    fn token_list() -> impl Strategy<Value = String> {
        (
            prop::collection::vec((token(), ws()), 0..5),
            ws(),
            prop_oneof![6 => Just(""), 1 => Just(","), 1 => Just(",[]"), 1 => Just(",1")],
            prop_oneof![6 => Just(""), 1 => Just(" "), 1 => Just("]"), 1 => Just("x")],
        )
            .prop_map(|(tokens, w, last, tail)| {
                let items: Vec<String> = tokens
                    .iter()
                    .map(|(t, w)| format!("{w}\"{t}\"{w}"))
                    .collect();
                format!("{w}[{}{last}]{w}{tail}", items.join(","))
            })
    }

    /// Texts near the hyphenated form: every position's byte replaced by hex of either case, a
    /// hyphen, or something else.
    fn near_hyphenated() -> impl Strategy<Value = String> {
        (
            0usize..36,
            prop_oneof![
                Just('A'),
                Just('f'),
                Just('g'),
                Just('-'),
                Just('0'),
                Just('{')
            ],
            any::<bool>(),
        )
            .prop_map(|(at, c, upper)| {
                let mut text: Vec<char> = "6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b".chars().collect();
                text[at] = c;
                let text: String = text.into_iter().collect();
                if upper {
                    text.to_uppercase()
                } else {
                    text
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Whatever the fast decoder accepts, serde decodes to the same tokens.
        #[test]
        fn token_lists_agree_with_serde(body in token_list()) {
            if let Some(fast) = Vec::<Uuid>::decode_fast(body.as_bytes()) {
                prop_assert_eq!(Some(fast), serde_decode::<Vec<Uuid>>(&body), "{}", body);
            }
        }

        /// The hand parser reads what `Uuid` reads, or declines.
        #[test]
        fn hyphenated_agrees_with_uuid(text in near_hyphenated()) {
            if let Some(fast) = hyphenated(text.as_bytes()) {
                prop_assert_eq!(Ok(fast), Uuid::try_parse(&text), "{}", text);
            } else {
                prop_assert!(text.len() != 36 || Uuid::try_parse(&text).is_err(), "{}", text);
            }
        }
    }

    /// A byte's hex value the slow way.
    fn hex_digit(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }

    /// Bytes that are mostly hex digits of either case, with their neighbours in ASCII
    /// (`/`, `:`, `@`, `G`, `` ` ``, `g`) and some outside it.
    fn near_hex_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            8 => prop::sample::select(b"0123456789abcdefABCDEF".to_vec()),
            2 => prop::sample::select(b"/:@G`g-{ ".to_vec()),
            1 => any::<u8>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        /// The eight-at-a-time conversion agrees with converting digit by digit.
        #[test]
        fn hex8_agrees_with_digit_by_digit(bytes in prop::array::uniform8(near_hex_byte())) {
            let expected: Option<Vec<u8>> = bytes
                .chunks(2)
                .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
                .collect();
            let got = hex8(u64::from_le_bytes(bytes)).map(|v| v.to_le_bytes().to_vec());
            prop_assert_eq!(got, expected, "{:?}", bytes);
        }

        /// The usual client body, with any tokens and numbers: the literal path accepts what it
        /// can, and agrees with serde (and with the general scanner) when it does.
        #[test]
        fn usual_bodies_agree_with_serde(
            a in token(),
            b in token(),
            n in number(),
            tail in prop_oneof![4 => Just(""), 1 => Just(" "), 1 => Just("x"), 1 => Just(",")],
        ) {
            let body = format!(r#"{{"requestId":"{a}","requestorId":"{b}","numTransactions":{n}}}{tail}"#);
            let serde = serde_decode::<StartTransactionsRequest>(&body);
            if let Some(usual) = StartTransactionsRequest::decode_usual(body.as_bytes()) {
                prop_assert_eq!(Some(usual), serde, "{}", body);
            } else if a.len() == 36 && b.len() == 36 && n.parse::<i64>().is_ok() && tail.trim().is_empty() {
                // Hyphenated tokens and a plain integer must not fall off the literal path.
                prop_assert!(
                    hyphenated(a.as_bytes()).is_none() || hyphenated(b.as_bytes()).is_none()
                        || n.starts_with("-0") || (n.starts_with('0') && n.len() > 1),
                    "{}", body
                );
            }
        }
    }

    #[test]
    fn token_lists_take_the_fast_path() {
        let a = "6f1c2a4e-5b7d-4e0f-8a9b-0c1d2e3f4a5b";
        let b = "6F1C2A4E-5B7D-4E0F-8A9B-0C1D2E3F4A5C";
        for body in [
            "[]".to_string(),
            format!("[\"{a}\"]"),
            format!(" [ \"{a}\" ,\n\"{b}\" ] "),
        ] {
            let fast = Vec::<Uuid>::decode_fast(body.as_bytes());
            assert!(fast.is_some(), "{body}");
            assert_eq!(fast, serde_decode(&body), "{body}");
        }
        for body in ["[", "[,]", "[1]", "{}", "[\"a\"]", "[] x"] {
            assert_eq!(Vec::<Uuid>::decode_fast(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn scanner_pieces() {
        assert_eq!(Scanner::new(b" -12 ").i64(), Some(-12));
        assert_eq!(Scanner::new(b"0").i64(), Some(0));
        for bad in [
            &b"01"[..],
            b"-0",
            b"-01",
            b"1.0",
            b"1e3",
            b"-",
            b"",
            b"+1",
            b"9223372036854775808",
        ] {
            assert_eq!(Scanner::new(bad).i64(), None, "{bad:?}");
        }
        assert_eq!(Scanner::new(b"-9223372036854775808").i64(), Some(i64::MIN));
        assert_eq!(
            Scanner::new(br#""ab c""#).plain_string(),
            Some(&b"ab c"[..])
        );
        for bad in [&br#""a\"b""#[..], br#""a"#, br#""a\\""#] {
            assert_eq!(Scanner::new(bad).plain_string(), None, "{bad:?}");
        }
        assert!(Scanner::new(b" null,").null().is_some());
        assert!(Scanner::new(b"nullx").null().is_none());
    }
}
