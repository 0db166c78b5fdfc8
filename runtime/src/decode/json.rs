//! Loki's JSON push format, deserialized straight into model types with serde seeds:
//!
//! ```json
//! {"streams":[{"stream":{"app":"api"},"values":[["1700000000000000000","line"],
//!                                              ["1700000000000000001","line",{"trace_id":"abc"}]]}]}
//! ```
//!
//! Unknown fields are ignored. Anything of the wrong type is `Malformed`, naming where it is
//! (`streams[3].values[17][0]`) and what was found; serde_json adds the line and column.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::DecodeError;
use super::cost::{Cost, PAIR_OVERHEAD};
use super::validate::{RawLabels, Validator};
use crate::model::{Entry, Pair};

/// Decodes `bytes` and hands each stream to `validator`, charging `cost` for each entry as it is
/// built (a refusal stops the parse and is returned as it is, not as a syntax error).
pub(crate) fn decode(
    bytes: &[u8],
    validator: &mut Validator<'_>,
    cost: &mut Cost<'_>,
) -> Result<(), DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de::Deserializer::deserialize_any(&mut de, PushVisitor { validator, cost: &mut *cost });
    if cost.is_refused() {
        return Err(cost.take_error());
    }
    let malformed = |e: serde_json::Error| DecodeError::Malformed(e.to_string());
    parsed.map_err(malformed)?;
    de.end().map_err(malformed)
}

/// The serde error that stops a parse whose cost was refused; [`decode`] returns the refusal.
fn refused<E: de::Error>() -> E {
    E::custom("the push's cost was refused")
}

/// Where in the document a value is, for error messages.
#[derive(Clone, Copy)]
enum Loc<'a> {
    Body,
    Streams,
    Stream(usize),
    Labels(usize),
    LabelValue(usize, &'a str),
    Values(usize),
    Value(usize, usize),
    Timestamp(usize, usize),
    Line(usize, usize),
    Metadata(usize, usize),
    MetadataValue(usize, usize, &'a str),
}

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = |name: &str| {
            name.get(..name.floor_char_boundary(64)).unwrap_or_default().escape_debug().to_string()
        };
        match *self {
            Self::Body => f.write_str("body"),
            Self::Streams => f.write_str("streams"),
            Self::Stream(i) => write!(f, "streams[{i}]"),
            Self::Labels(i) => write!(f, "streams[{i}].stream"),
            Self::LabelValue(i, name) => write!(f, "streams[{i}].stream[\"{}\"]", key(name)),
            Self::Values(i) => write!(f, "streams[{i}].values"),
            Self::Value(i, j) => write!(f, "streams[{i}].values[{j}]"),
            Self::Timestamp(i, j) => write!(f, "streams[{i}].values[{j}][0]"),
            Self::Line(i, j) => write!(f, "streams[{i}].values[{j}][1]"),
            Self::Metadata(i, j) => write!(f, "streams[{i}].values[{j}][2]"),
            Self::MetadataValue(i, j, name) => write!(f, "streams[{i}].values[{j}][2][\"{}\"]", key(name)),
        }
    }
}

fn wrong<E: de::Error>(loc: Loc<'_>, expected: &str, got: &str) -> E {
    E::custom(format_args!("{loc}: {expected}, got {got}"))
}

/// Rejects the JSON types a visitor does not take, with [`wrong`]'s message. The visitor has
/// `loc()` and `EXPECTED`.
macro_rules! reject {
    ($($kind:ident),*) => { $( reject!(@ $kind); )* };
    (@ bool) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(wrong(self.loc(), Self::EXPECTED, "a boolean"))
        }
    };
    (@ number) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(wrong(self.loc(), Self::EXPECTED, "a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(wrong(self.loc(), Self::EXPECTED, "a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(wrong(self.loc(), Self::EXPECTED, "a number"))
        }
    };
    (@ null) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(wrong(self.loc(), Self::EXPECTED, "null"))
        }
    };
    (@ string) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(wrong(self.loc(), Self::EXPECTED, "a string"))
        }
    };
    (@ array) => {
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(wrong(self.loc(), Self::EXPECTED, "an array"))
        }
    };
    (@ object) => {
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(wrong(self.loc(), Self::EXPECTED, "an object"))
        }
    };
}

/// Every visitor here is driven by `deserialize_any`, so the JSON type picks the method.
macro_rules! seed_via_any {
    ($seed:ident) => {
        impl<'de> DeserializeSeed<'de> for $seed<'_, '_, '_, '_> {
            type Value = <Self as Visitor<'de>>::Value;
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
        }
    };
}

struct PushVisitor<'v, 'l, 'c, 'm> {
    validator: &'v mut Validator<'l>,
    cost: &'c mut Cost<'m>,
}

impl PushVisitor<'_, '_, '_, '_> {
    const EXPECTED: &'static str = "the body must be a JSON object with a \"streams\" array";
    fn loc(&self) -> Loc<'static> {
        Loc::Body
    }
}

impl<'de> Visitor<'de> for PushVisitor<'_, '_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::EXPECTED)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Streams => map.next_value_seed(StreamsVisitor {
                    validator: &mut *self.validator,
                    cost: &mut *self.cost,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    reject!(bool, number, null, string, array);
}

/// An object key this format cares about; the rest are skipped without allocating.
enum Key {
    Streams,
    Stream,
    Values,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "streams" => Key::Streams,
                    "stream" => Key::Stream,
                    "values" => Key::Values,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

struct StreamsVisitor<'v, 'l, 'c, 'm> {
    validator: &'v mut Validator<'l>,
    cost: &'c mut Cost<'m>,
}

impl StreamsVisitor<'_, '_, '_, '_> {
    const EXPECTED: &'static str = "must be an array of streams";
    fn loc(&self) -> Loc<'static> {
        Loc::Streams
    }
}

seed_via_any!(StreamsVisitor);

impl<'de> Visitor<'de> for StreamsVisitor<'_, '_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::EXPECTED)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(StreamVisitor { validator: &mut *self.validator, cost: &mut *self.cost, i })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    reject!(bool, number, null, string, object);
}

struct StreamVisitor<'v, 'l, 'c, 'm> {
    validator: &'v mut Validator<'l>,
    cost: &'c mut Cost<'m>,
    i: usize,
}

impl StreamVisitor<'_, '_, '_, '_> {
    const EXPECTED: &'static str = "a stream must be an object with \"stream\" and \"values\"";
    fn loc(&self) -> Loc<'static> {
        Loc::Stream(self.i)
    }
}

seed_via_any!(StreamVisitor);

impl<'de> Visitor<'de> for StreamVisitor<'_, '_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::EXPECTED)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let i = self.i;
        let mut labels: Vec<Pair> = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Stream => labels = map.next_value_seed(LabelsSeed { i })?,
                Key::Values => {
                    map.next_value_seed(ValuesSeed { i, out: &mut entries, cost: &mut *self.cost })?
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let label_bytes: usize = labels.iter().map(|(n, v)| n.len() + v.len() + PAIR_OVERHEAD).sum();
        self.cost.stream(label_bytes).map_err(|_| refused())?;
        self.validator.push_stream(RawLabels::Pairs(labels), entries);
        Ok(())
    }

    reject!(bool, number, null, string, array);
}

struct LabelsSeed {
    i: usize,
}

impl LabelsSeed {
    const EXPECTED: &'static str = "labels must be an object of string values";
    fn loc(&self) -> Loc<'static> {
        Loc::Labels(self.i)
    }
}

impl<'de> DeserializeSeed<'de> for LabelsSeed {
    type Value = Vec<Pair>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LabelsSeed {
    type Value = Vec<Pair>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::EXPECTED)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Pair>, A::Error> {
        let mut pairs = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(StringSeed {
                loc: Loc::LabelValue(self.i, &name),
                expected: "a label value must be a string",
            })?;
            pairs.push((name, value));
        }
        Ok(pairs)
    }

    reject!(bool, number, null, string, array);
}

struct ValuesSeed<'o, 'c, 'm> {
    i: usize,
    out: &'o mut Vec<Entry>,
    cost: &'c mut Cost<'m>,
}

impl ValuesSeed<'_, '_, '_> {
    const EXPECTED: &'static str =
        "values must be an array of [timestamp, line] or [timestamp, line, metadata]";
    fn loc(&self) -> Loc<'static> {
        Loc::Values(self.i)
    }
}

impl<'de> DeserializeSeed<'de> for ValuesSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValuesSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::EXPECTED)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let i = self.i;
        let mut j = self.out.len();
        while let Some(entry) = seq.next_element_seed(EntrySeed { i, j })? {
            let bytes = entry.line.len() + entry.metadata_size() + entry.metadata.len() * PAIR_OVERHEAD;
            self.cost.entries(1, bytes).map_err(|_| refused())?;
            self.out.push(entry);
            j += 1;
        }
        Ok(())
    }

    reject!(bool, number, null, string, object);
}

struct EntrySeed {
    i: usize,
    j: usize,
}

impl EntrySeed {
    const EXPECTED: &'static str = "an entry must be [timestamp, line] or [timestamp, line, metadata]";
    fn loc(&self) -> Loc<'static> {
        Loc::Value(self.i, self.j)
    }
}

impl<'de> DeserializeSeed<'de> for EntrySeed {
    type Value = Entry;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Entry, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed {
    type Value = Entry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::EXPECTED)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entry, A::Error> {
        let (i, j) = (self.i, self.j);
        let arity = |n: usize| wrong(Loc::Value(i, j), Self::EXPECTED, &format!("{n} element(s)"));
        let Some(timestamp_ns) = seq.next_element_seed(TimestampSeed { i, j })? else { return Err(arity(0)) };
        let line_seed = StringSeed { loc: Loc::Line(i, j), expected: "the line must be a string" };
        let Some(line) = seq.next_element_seed(line_seed)? else { return Err(arity(1)) };
        let metadata = seq.next_element_seed(MetadataSeed { i, j })?.unwrap_or_default();
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(wrong(Loc::Value(i, j), Self::EXPECTED, "more than 3 elements"));
        }
        Ok(Entry { timestamp_ns, line, metadata })
    }

    reject!(bool, number, null, string, object);
}

struct TimestampSeed {
    i: usize,
    j: usize,
}

impl TimestampSeed {
    const EXPECTED: &'static str = "timestamp must be a string of nanoseconds since the Unix epoch";
    fn loc(&self) -> Loc<'static> {
        Loc::Timestamp(self.i, self.j)
    }
}

impl<'de> DeserializeSeed<'de> for TimestampSeed {
    type Value = i64;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TimestampSeed {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::EXPECTED)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        parse_nanos(v).ok_or_else(|| {
            let shown = v.get(..v.floor_char_boundary(40)).unwrap_or_default();
            let got = if v.len() > 40 { format!("\"{shown}…\"") } else { format!("\"{shown}\"") };
            wrong(self.loc(), "timestamp must be a whole number of nanoseconds that fits in 64 bits", &got)
        })
    }

    reject!(bool, number, null, array, object);
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits, checked range.
fn parse_nanos(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        rest => (false, rest),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &b in digits {
        let d = i64::from(char::from(b).to_digit(10)?);
        v = v.checked_mul(10)?;
        v = if negative { v.checked_sub(d)? } else { v.checked_add(d)? };
    }
    Some(v)
}

struct MetadataSeed {
    i: usize,
    j: usize,
}

impl MetadataSeed {
    const EXPECTED: &'static str = "structured metadata must be an object of string values";
    fn loc(&self) -> Loc<'static> {
        Loc::Metadata(self.i, self.j)
    }
}

impl<'de> DeserializeSeed<'de> for MetadataSeed {
    type Value = Vec<Pair>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<Pair>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed {
    type Value = Vec<Pair>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::EXPECTED)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Pair>, A::Error> {
        let mut pairs = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(StringSeed {
                loc: Loc::MetadataValue(self.i, self.j, &name),
                expected: "a structured metadata value must be a string",
            })?;
            pairs.push((name, value));
        }
        Ok(pairs)
    }

    reject!(bool, number, null, string, array);
}

/// A string value (label value, line, metadata value) taken as an owned `String`.
struct StringSeed<'a> {
    loc: Loc<'a>,
    expected: &'static str,
}

impl<'de> DeserializeSeed<'de> for StringSeed<'_> {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StringSeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<String, E> {
        Err(wrong(self.loc, self.expected, "a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<String, E> {
        Err(wrong(self.loc, self.expected, "a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<String, E> {
        Err(wrong(self.loc, self.expected, "a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<String, E> {
        Err(wrong(self.loc, self.expected, "a number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(wrong(self.loc, self.expected, "null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(wrong(self.loc, self.expected, "an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(wrong(self.loc, self.expected, "an object"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Limits;
    use crate::decode::{Decoded, Reason};

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn run(body: &str) -> Result<Decoded, DecodeError> {
        let limits = Limits::default();
        let mut v = Validator::new(&limits, Arc::from("t"), NOW);
        let mut meter = crate::decode::Unmetered::default();
        let mut cost = Cost::new(crate::decode::PushLimits::NONE, &mut meter);
        decode(body.as_bytes(), &mut v, &mut cost)?;
        cost.finish()?;
        Ok(v.finish())
    }

    fn malformed(body: &str) -> String {
        match run(body) {
            Err(DecodeError::Malformed(m)) => m,
            other => panic!(
                "{} should be malformed, got {other:?}",
                body.get(..body.floor_char_boundary(200)).unwrap_or_default()
            ),
        }
    }

    #[test]
    fn decodes_loki_json() {
        let d = run(r#"{"streams":[
            {"stream":{"app":"api","env":"prod"},"values":[
                ["1700000000000000000","first"],
                ["1700000000000000001","second \"quoted\"\n",{"trace_id":"abc","user":"ü"}]
            ],"unknown":[1,2,{"x":null}]},
            {"values":[["+1700000000000000002","third"]],"stream":{"app":"db"}}
        ],"extra":true}"#)
        .expect("decodes");
        assert!(d.rejected.is_empty(), "{:?}", d.rejected);
        assert_eq!(d.batch.streams.len(), 2);
        let s = &d.batch.streams[0];
        assert_eq!(s.labels.to_string(), r#"{app="api", env="prod"}"#);
        assert_eq!(s.entries[0].timestamp_ns, NOW);
        assert_eq!(s.entries[1].line, "second \"quoted\"\n");
        assert_eq!(
            s.entries[1].metadata,
            vec![("trace_id".into(), "abc".into()), ("user".into(), "ü".into())]
        );
        assert_eq!(d.batch.streams[1].entries[0].timestamp_ns, NOW + 2);
        assert_eq!(d.batch.streams[1].labels.get("app"), Some("db"));
    }

    #[test]
    fn empty_and_trivial_documents() {
        assert_eq!(run("{}").expect("ok").batch.streams.len(), 0);
        assert_eq!(run(r#"{"streams":[]}"#).expect("ok").batch.streams.len(), 0);
        assert_eq!(run(r#"{"streams":[{"stream":{"a":"1"},"values":[]}]}"#).expect("ok").rejected.len(), 0);
    }

    #[test]
    fn stream_without_labels_is_rejected_not_malformed() {
        let d = run(r#"{"streams":[{"values":[["1700000000000000000","x"]]}]}"#).expect("decodes");
        assert_eq!(d.rejected[0].reason, Reason::MissingLabels);
        let d = run(r#"{"streams":[{"stream":{"a.b":"1"},"values":[["1700000000000000000","x"]]}]}"#)
            .expect("ok");
        assert_eq!(d.rejected[0].reason, Reason::InvalidLabels);
    }

    #[test]
    fn wrong_types_name_the_place() {
        let cases = [
            (r#"[]"#, "body: the body must be a JSON object", "got an array"),
            (r#"{"streams":{}}"#, "streams: must be an array", "got an object"),
            (r#"{"streams":[1]}"#, "streams[0]: a stream must be an object", "got a number"),
            (r#"{"streams":[{"stream":[]}]}"#, "streams[0].stream: labels must be an object", "got an array"),
            (
                r#"{"streams":[{"stream":{"a":1}}]}"#,
                r#"streams[0].stream["a"]: a label value must be a string"#,
                "got a number",
            ),
            (r#"{"streams":[{"stream":{"a":null}}]}"#, r#"streams[0].stream["a"]"#, "got null"),
            (r#"{"streams":[{"values":{}}]}"#, "streams[0].values: values must be an array", "got an object"),
            (
                r#"{"streams":[{},{"values":[["1","a"],[1700000000000000000,"b"]]}]}"#,
                "streams[1].values[1][0]: timestamp must be a string of nanoseconds",
                "got a number",
            ),
            (
                r#"{"streams":[{"values":[["17x","a"]]}]}"#,
                "streams[0].values[0][0]: timestamp must be a whole number",
                r#"got "17x""#,
            ),
            (r#"{"streams":[{"values":[["","a"]]}]}"#, "values[0][0]", r#"got """#),
            (r#"{"streams":[{"values":[["99999999999999999999","a"]]}]}"#, "fits in 64 bits", "got"),
            (
                r#"{"streams":[{"values":[["1"]]}]}"#,
                "streams[0].values[0]: an entry must be",
                "got 1 element(s)",
            ),
            (r#"{"streams":[{"values":[[]]}]}"#, "streams[0].values[0]", "got 0 element(s)"),
            (
                r#"{"streams":[{"values":[["1","a",{},4]]}]}"#,
                "streams[0].values[0]",
                "got more than 3 elements",
            ),
            (r#"{"streams":[{"values":["1"]}]}"#, "streams[0].values[0]: an entry must be", "got a string"),
            (
                r#"{"streams":[{"values":[["1",2]]}]}"#,
                "streams[0].values[0][1]: the line must be a string",
                "got a number",
            ),
            (
                r#"{"streams":[{"values":[["1","a",[]]]}]}"#,
                "streams[0].values[0][2]: structured metadata must be",
                "got an array",
            ),
            (
                r#"{"streams":[{"values":[["1","a",{"k":true}]]}]}"#,
                r#"streams[0].values[0][2]["k"]: a structured"#,
                "got a boolean",
            ),
        ];
        for (body, place, got) in cases {
            let m = malformed(body);
            assert!(m.contains(place) && m.contains(got), "{body}: {m}");
        }
    }

    #[test]
    fn syntax_errors_are_malformed() {
        for body in [
            "",
            "{",
            r#"{"streams":[}"#,
            r#"{"streams":[]} x"#,
            r#"{"streams":[{"values":[["1","a",]]}]}"#,
            "nul",
        ] {
            let m = malformed(body);
            assert!(m.contains("line") && m.contains("column"), "{body}: {m}");
        }
        // Invalid UTF-8 inside a string.
        let limits = Limits::default();
        let mut v = Validator::new(&limits, Arc::from("t"), NOW);
        let mut meter = crate::decode::Unmetered::default();
        let mut cost = Cost::new(crate::decode::PushLimits::NONE, &mut meter);
        assert!(decode(b"{\"streams\":[{\"values\":[[\"1\",\"\xff\"]]}]}", &mut v, &mut cost).is_err());
    }

    #[test]
    fn nanos_parsing_matches_go_parse_int() {
        assert_eq!(parse_nanos("0"), Some(0));
        assert_eq!(parse_nanos("-12"), Some(-12));
        assert_eq!(parse_nanos("+7"), Some(7));
        assert_eq!(parse_nanos("9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_nanos("-9223372036854775808"), Some(i64::MIN));
        for bad in ["", "-", "+", "9223372036854775808", "1.5", " 1", "1e9", "0x10", "1_000", "١"] {
            assert_eq!(parse_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn deep_nesting_is_handled_without_recursion() {
        // serde_json skips ignored values iteratively, and our visitors nest a fixed depth.
        let deep = format!(r#"{{"x":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert!(run(&deep).is_ok());
        let deep = format!(r#"{{"streams":{}"#, "[".repeat(100_000));
        match run(&deep) {
            Err(DecodeError::Malformed(m)) => {
                assert!(m.contains("streams[0]: a stream must be an object"), "{m}")
            }
            other => panic!("{:?}", other.map(|d| d.batch.streams.len())),
        }
    }
}
