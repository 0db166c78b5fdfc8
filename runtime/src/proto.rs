//! Loki's push protocol (`logproto.PushRequest`), declared with prost's derive instead of a
//! `.proto` file so the build needs no `protoc`. Field numbers follow Loki's `push.proto`.

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: labels as a selector string, e.g. `{app="api"}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// Set by Loki internally; clients leave it 0.
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
    /// Labels parsed at query time; never sent on push, kept so decoding tolerates it.
    #[prost(message, repeated, tag = "4")]
    pub parsed: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// From nanoseconds since the epoch (negative values round toward minus infinity).
    pub fn from_nanos(ns: i64) -> Self {
        Self { seconds: ns.div_euclid(1_000_000_000), nanos: ns.rem_euclid(1_000_000_000) as i32 }
    }

    /// To nanoseconds since the epoch; `None` when out of i64's range.
    pub fn to_nanos(self) -> Option<i64> {
        // In i128: seconds × 10⁹ alone may overflow where the sum does not (just above i64::MIN).
        i64::try_from(i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanos)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    /// Found by the push fuzz targets: just above i64::MIN, seconds × 10⁹ overflows although
    /// the timestamp fits, and such entries came back as i64::MIN.
    #[test]
    fn every_i64_nanosecond_round_trips() {
        for ns in [i64::MIN, i64::MIN + 1, i64::MIN + 854_775_807, -1, 0, 1, i64::MAX - 1, i64::MAX] {
            let ts = Timestamp::from_nanos(ns);
            assert!((0..1_000_000_000).contains(&ts.nanos), "{ns}: canonical {ts:?}");
            assert_eq!(ts.to_nanos(), Some(ns), "{ns}: {ts:?}");
        }
        let beyond = Timestamp { seconds: i64::MAX / 1_000_000_000 + 1, nanos: 0 };
        assert_eq!(beyond.to_nanos(), None);
    }
}
