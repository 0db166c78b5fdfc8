//! Loki's validation rules, applied to decoded streams: stream-level label rules once per stream,
//! then entry rules per entry, in Loki's order (too old, too far in the future, line length,
//! structured-metadata size, structured-metadata count). Valid entries are kept in order;
//! rejections are aggregated per (stream, rule).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::labels::{LabelParseError, is_valid_label_name};
use super::{Decoded, Reason, Rejected};
use crate::config::Limits;
use crate::model::{Batch, Entry, LabelSet, Pair, Stream};

/// Loki adds `service_name` itself, so it does not count toward `max_label_names_per_series`.
const SERVICE_NAME: &str = "service_name";

/// Longest label string quoted in a rejection message.
const MAX_SHOWN: usize = 512;

/// A stream's labels as the decoder found them.
pub(crate) enum RawLabels<'a> {
    /// Pairs as sent (empty values, duplicates and bad names still in).
    Pairs(Vec<Pair>),
    /// A label string that did not parse.
    Unparsed { text: &'a str, error: LabelParseError },
}

/// Applies [`Limits`] at a fixed `now` and collects the result.
pub(crate) struct Validator<'l> {
    limits: &'l Limits,
    /// Entries older than this are rejected; `None` when `reject_old_samples` is off.
    oldest_ns: Option<i64>,
    newest_ns: i64,
    max_line: usize,
    max_metadata_size: usize,
    out: Decoded,
}

/// A rule that failed for one entry, before aggregation.
struct Hit {
    reason: Reason,
    entries: usize,
    bytes: usize,
    detail: String,
}

impl<'l> Validator<'l> {
    pub(crate) fn new(limits: &'l Limits, tenant: Arc<str>, now_ns: i64) -> Self {
        let oldest_ns = limits
            .reject_old_samples
            .then(|| now_ns.checked_sub(duration_ns(limits.reject_old_samples_max_age)).unwrap_or(i64::MIN));
        let newest_ns = now_ns.checked_add(duration_ns(limits.creation_grace_period)).unwrap_or(i64::MAX);
        Self {
            limits,
            oldest_ns,
            newest_ns,
            max_line: bytes_limit(limits.max_line_size.as_u64()),
            max_metadata_size: bytes_limit(limits.max_structured_metadata_size.as_u64()),
            out: Decoded { batch: Batch::new(tenant), rejected: Vec::new(), truncated_lines: 0 },
        }
    }

    /// Validates one stream, keeping its valid entries.
    pub(crate) fn push_stream(&mut self, labels: RawLabels<'_>, mut entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let labels = match self.check_labels(labels) {
            Ok(labels) => labels,
            Err((reason, shown, detail)) => {
                let hit = Hit { reason, entries: entries.len(), bytes: line_bytes(&entries), detail };
                self.out.rejected.push(rejected(&shown, hit));
                return;
            }
        };
        let mut hits: Vec<Hit> = Vec::new();
        entries.retain_mut(|entry| match self.check_entry(entry) {
            Ok(()) => true,
            Err(reason) => {
                let bytes = entry.line.len();
                match hits.iter_mut().find(|h| h.reason == reason) {
                    Some(hit) => {
                        hit.entries += 1;
                        hit.bytes += bytes;
                    }
                    None => {
                        hits.push(Hit { reason, entries: 1, bytes, detail: self.entry_detail(reason, entry) })
                    }
                }
                false
            }
        });
        if !hits.is_empty() {
            let shown = shown(&labels.to_string());
            self.out.rejected.extend(hits.into_iter().map(|hit| rejected(&shown, hit)));
        }
        if !entries.is_empty() {
            self.out.batch.streams.push(Stream { labels, entries });
        }
    }

    pub(crate) fn finish(self) -> Decoded {
        self.out
    }

    /// The stream-level rules, in Loki's order. On failure: the reason, the stream as shown in
    /// messages, and what was wrong.
    fn check_labels(&self, labels: RawLabels<'_>) -> Result<LabelSet, (Reason, String, String)> {
        let mut pairs = match labels {
            RawLabels::Pairs(pairs) => pairs,
            RawLabels::Unparsed { text, error } => {
                return Err((
                    Reason::InvalidLabels,
                    shown(text),
                    format!("the label string does not parse ({error})"),
                ));
            }
        };
        if let Some((name, _)) = pairs.iter().find(|(n, _)| !is_valid_label_name(n)) {
            let detail = format!(
                "label name \"{}\" is not valid (names must match [a-zA-Z_][a-zA-Z0-9_]*)",
                clip(name).escape_debug()
            );
            return Err((Reason::InvalidLabels, shown(&LabelSet::new(pairs).to_string()), detail));
        }
        // Labels that start with `__` are internal to sluice and Loki (`__tenant_id__` moves a
        // stream to another tenant); a client's push may not set them. Promtail and Alloy drop
        // them before sending.
        if let Some((name, _)) = pairs.iter().find(|(n, _)| n.starts_with("__")) {
            let detail = format!(
                "label name \"{}\" is reserved: names starting with \"__\" are internal and may not be sent by a client",
                clip(name).escape_debug()
            );
            return Err((Reason::ReservedLabelName, shown(&LabelSet::new(pairs).to_string()), detail));
        }
        // Loki treats a label with an empty value as absent.
        pairs.retain(|(_, v)| !v.is_empty());
        let labels = LabelSet::new(pairs);
        let l = self.limits;
        if labels.is_empty() {
            let detail = "the stream has no labels (labels with empty values count as absent)".to_owned();
            return Err((Reason::MissingLabels, "{}".to_owned(), detail));
        }
        let counted = labels.len() - usize::from(labels.get(SERVICE_NAME).is_some());
        if counted > l.max_label_names_per_series {
            let detail = format!(
                "it has {counted} labels (not counting {SERVICE_NAME}), above \
                 max_label_names_per_series = {}",
                l.max_label_names_per_series
            );
            return Err((Reason::MaxLabelNamesPerSeries, shown(&labels.to_string()), detail));
        }
        let mut previous: Option<&str> = None;
        for (name, value) in labels.pairs() {
            let failure = if name.len() > l.max_label_name_length {
                Some((
                    Reason::LabelNameTooLong,
                    format!(
                        "label name \"{}\" is {} bytes, above max_label_name_length = {}",
                        clip(name),
                        name.len(),
                        l.max_label_name_length
                    ),
                ))
            } else if value.len() > l.max_label_value_length {
                Some((
                    Reason::LabelValueTooLong,
                    format!(
                        "the value of label \"{name}\" is {} bytes, above max_label_value_length = {}",
                        value.len(),
                        l.max_label_value_length
                    ),
                ))
            } else if previous == Some(name.as_str()) {
                Some((Reason::DuplicateLabelNames, format!("label \"{name}\" is given more than once")))
            } else {
                None
            };
            if let Some((reason, detail)) = failure {
                return Err((reason, shown(&labels.to_string()), detail));
            }
            previous = Some(name);
        }
        Ok(labels)
    }

    /// The entry rules; truncates an over-long line when configured to and the entry passes.
    fn check_entry(&mut self, entry: &mut Entry) -> Result<(), Reason> {
        let ts = entry.timestamp_ns;
        if self.oldest_ns.is_some_and(|oldest| ts < oldest) {
            return Err(Reason::GreaterThanMaxSampleAge);
        }
        if ts > self.newest_ns {
            return Err(Reason::TooFarInFuture);
        }
        let l = self.limits;
        let too_long = self.max_line != 0 && entry.line.len() > self.max_line;
        if too_long && !l.max_line_size_truncate {
            return Err(Reason::LineTooLong);
        }
        if !entry.metadata.is_empty() {
            if self.max_metadata_size != 0 && entry.metadata_size() > self.max_metadata_size {
                return Err(Reason::StructuredMetadataTooLarge);
            }
            let max_count = l.max_structured_metadata_entries_count;
            if max_count != 0 && entry.metadata.len() > max_count {
                return Err(Reason::StructuredMetadataTooMany);
            }
        }
        if too_long {
            let cut = entry.line.floor_char_boundary(self.max_line);
            entry.line.truncate(cut);
            self.out.truncated_lines += 1;
        }
        Ok(())
    }

    /// What was wrong with `entry`, for the message of the first entry a rule rejects.
    fn entry_detail(&self, reason: Reason, entry: &Entry) -> String {
        let l = self.limits;
        let ts = format_ns(entry.timestamp_ns);
        match reason {
            Reason::GreaterThanMaxSampleAge => format!(
                "timestamp {ts} is older than reject_old_samples_max_age = {} allows (oldest accepted: {})",
                humantime::format_duration(l.reject_old_samples_max_age),
                format_ns(self.oldest_ns.unwrap_or(i64::MIN)),
            ),
            Reason::TooFarInFuture => format!(
                "timestamp {ts} is later than now plus creation_grace_period = {} (latest accepted: {})",
                humantime::format_duration(l.creation_grace_period),
                format_ns(self.newest_ns),
            ),
            Reason::LineTooLong => format!(
                "a line of {} bytes is longer than max_line_size = {} bytes (or set max_line_size_truncate)",
                entry.line.len(),
                self.max_line
            ),
            Reason::StructuredMetadataTooLarge => format!(
                "{} bytes of structured metadata are above max_structured_metadata_size = {} bytes",
                entry.metadata_size(),
                self.max_metadata_size
            ),
            Reason::StructuredMetadataTooMany => format!(
                "{} structured metadata pairs are above max_structured_metadata_entries_count = {}",
                entry.metadata.len(),
                l.max_structured_metadata_entries_count
            ),
            other => other.as_str().to_owned(),
        }
    }
}

fn rejected(shown: &str, hit: Hit) -> Rejected {
    let mut message = format!(
        "stream {shown}: {} {} rejected ({}): ",
        hit.entries,
        if hit.entries == 1 { "entry" } else { "entries" },
        hit.reason.as_str()
    );
    if hit.entries > 1 && !is_stream_rule(hit.reason) {
        message.push_str("the first: ");
    }
    let _ = write!(message, "{}", hit.detail);
    Rejected { reason: hit.reason, entries: hit.entries, bytes: hit.bytes, message }
}

fn is_stream_rule(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::MissingLabels
            | Reason::InvalidLabels
            | Reason::MaxLabelNamesPerSeries
            | Reason::LabelNameTooLong
            | Reason::LabelValueTooLong
            | Reason::DuplicateLabelNames
    )
}

fn line_bytes(entries: &[Entry]) -> usize {
    entries.iter().map(|e| e.line.len()).sum()
}

/// A label string cut to [`MAX_SHOWN`] bytes for messages.
fn shown(text: &str) -> String {
    let cut = text.floor_char_boundary(MAX_SHOWN);
    if cut < text.len() { format!("{}…", text.get(..cut).unwrap_or_default()) } else { text.to_owned() }
}

/// A name cut to 64 bytes for messages.
fn clip(name: &str) -> &str {
    name.get(..name.floor_char_boundary(64)).unwrap_or_default()
}

/// Byte limits from config; 0 keeps meaning "off".
fn bytes_limit(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// RFC 3339 for timestamps after the epoch, raw nanoseconds otherwise.
fn format_ns(ns: i64) -> String {
    match u64::try_from(ns) {
        Ok(ns) => humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns)).to_string(),
        Err(_) => format!("{ns}ns (before 1970)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;
    const SEC: i64 = 1_000_000_000;

    fn pairs(p: &[(&str, &str)]) -> Vec<Pair> {
        p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn entry(ts: i64, line: &str) -> Entry {
        Entry { timestamp_ns: ts, line: line.to_owned(), metadata: Vec::new() }
    }

    fn run(limits: &Limits, labels: &[(&str, &str)], entries: Vec<Entry>) -> Decoded {
        let mut v = Validator::new(limits, Arc::from("t"), NOW);
        v.push_stream(RawLabels::Pairs(pairs(labels)), entries);
        v.finish()
    }

    fn only_rejection(d: &Decoded) -> &Rejected {
        assert_eq!(d.rejected.len(), 1, "{:?}", d.rejected);
        &d.rejected[0]
    }

    fn stream_rejected(limits: &Limits, labels: &[(&str, &str)], reason: Reason, needles: &[&str]) {
        let d = run(limits, labels, vec![entry(NOW, "ab"), entry(NOW, "cde")]);
        assert!(d.batch.streams.is_empty(), "{labels:?} should be rejected");
        let r = only_rejection(&d);
        assert_eq!((r.reason, r.entries, r.bytes), (reason, 2, 5), "{labels:?}: {}", r.message);
        for n in needles {
            assert!(r.message.contains(n), "{:?} lacks {n:?}", r.message);
        }
    }

    #[test]
    fn valid_stream_passes_sorted() {
        let d =
            run(&Limits::default(), &[("b", "2"), ("a", "1")], vec![entry(NOW, "x"), entry(NOW - SEC, "y")]);
        assert!(d.rejected.is_empty());
        assert_eq!(d.batch.streams.len(), 1);
        assert_eq!(d.batch.streams[0].labels.to_string(), r#"{a="1", b="2"}"#);
        let lines: Vec<_> = d.batch.streams[0].entries.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, ["x", "y"]);
    }

    #[test]
    fn a_client_may_not_send_reserved_labels() {
        let l = Limits::default();
        for name in ["__tenant_id__", "__name__", "__anything"] {
            stream_rejected(
                &l,
                &[("app", "api"), (name, "victim")],
                Reason::ReservedLabelName,
                &[name, "reserved"],
            );
        }
        // An empty value is no exception: the name alone is refused.
        stream_rejected(
            &l,
            &[("app", "api"), ("__tenant_id__", "")],
            Reason::ReservedLabelName,
            &["reserved"],
        );
        // One leading underscore is an ordinary label.
        assert!(run(&l, &[("_app", "x")], vec![entry(NOW, "ok")]).rejected.is_empty());
    }

    #[test]
    fn stream_rules() {
        let l = Limits {
            max_label_names_per_series: 2,
            max_label_name_length: 5,
            max_label_value_length: 4,
            ..Limits::default()
        };
        stream_rejected(&l, &[], Reason::MissingLabels, &["no labels"]);
        stream_rejected(&l, &[("a", "")], Reason::MissingLabels, &["{}"]);
        stream_rejected(&l, &[("a.b", "x")], Reason::InvalidLabels, &["\"a.b\"", "[a-zA-Z_]"]);
        stream_rejected(&l, &[("9", "")], Reason::InvalidLabels, &["\"9\""]);
        stream_rejected(
            &l,
            &[("a", "1"), ("b", "2"), ("c", "3")],
            Reason::MaxLabelNamesPerSeries,
            &[r#"{a="1", b="2", c="3"}"#, "3 labels", "max_label_names_per_series = 2"],
        );
        stream_rejected(
            &l,
            &[("abcdef", "1")],
            Reason::LabelNameTooLong,
            &["abcdef", "6 bytes", "max_label_name_length = 5"],
        );
        stream_rejected(
            &l,
            &[("a", "12345")],
            Reason::LabelValueTooLong,
            &["\"a\"", "5 bytes", "max_label_value_length = 4"],
        );
        stream_rejected(
            &l,
            &[("a", "1"), ("a", "2")],
            Reason::DuplicateLabelNames,
            &["\"a\"", r#"{a="1", a="2"}"#],
        );
        // service_name is not counted, and empty values are dropped before counting.
        let l = Limits { max_label_names_per_series: 2, ..Limits::default() };
        let d = run(&l, &[("a", "1"), ("b", "2"), ("service_name", "s"), ("c", "")], vec![entry(NOW, "x")]);
        assert!(d.rejected.is_empty(), "{:?}", d.rejected);
        assert_eq!(d.batch.streams[0].labels.len(), 3);
    }

    #[test]
    fn unparsed_labels_name_the_raw_text() {
        let limits = Limits::default();
        let mut v = Validator::new(&limits, Arc::from("t"), NOW);
        let error = LabelParseError { offset: 3, message: "boom".into() };
        v.push_stream(RawLabels::Unparsed { text: "{a=", error }, vec![entry(NOW, "x")]);
        let d = v.finish();
        let r = only_rejection(&d);
        assert_eq!(r.reason, Reason::InvalidLabels);
        assert!(r.message.contains("stream {a=:") && r.message.contains("at byte 3: boom"), "{}", r.message);
    }

    #[test]
    fn timestamps_old_and_future() {
        let l = Limits::default(); // 7 days back, 10 minutes ahead
        let week = 7 * 24 * 3600 * SEC;
        let d = run(
            &l,
            &[("a", "1")],
            vec![
                entry(NOW - week - 1, "old"),
                entry(NOW - week, "oldest ok"),
                entry(NOW + 600 * SEC, "newest ok"),
                entry(NOW + 600 * SEC + 1, "future"),
                entry(0, "missing timestamp"),
                entry(i64::MAX, "far"),
                entry(i64::MIN, "far back"),
            ],
        );
        let kept: Vec<_> = d.batch.streams[0].entries.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(kept, ["oldest ok", "newest ok"]);
        assert_eq!(d.rejected.len(), 2);
        let old = &d.rejected[0];
        assert_eq!((old.reason, old.entries, old.bytes), (Reason::GreaterThanMaxSampleAge, 3, 3 + 17 + 8));
        assert!(old.message.contains("reject_old_samples_max_age = 7days"), "{}", old.message);
        assert!(old.message.contains("the first: timestamp 2023-11-07T"), "{}", old.message);
        let future = &d.rejected[1];
        assert_eq!((future.reason, future.entries), (Reason::TooFarInFuture, 2));
        assert!(future.message.contains("creation_grace_period = 10m"), "{}", future.message);

        let off = Limits { reject_old_samples: false, ..Limits::default() };
        let d = run(&off, &[("a", "1")], vec![entry(0, "epoch"), entry(i64::MIN, "min")]);
        assert!(d.rejected.is_empty());
        // Extreme now values must not overflow.
        let mut v = Validator::new(&l, Arc::from("t"), i64::MIN);
        v.push_stream(RawLabels::Pairs(pairs(&[("a", "1")])), vec![entry(i64::MIN, "x")]);
        assert_eq!(v.finish().batch.entry_count(), 1);
        let mut v = Validator::new(&l, Arc::from("t"), i64::MAX);
        v.push_stream(RawLabels::Pairs(pairs(&[("a", "1")])), vec![entry(i64::MAX, "x")]);
        assert_eq!(v.finish().batch.entry_count(), 1);
    }

    #[test]
    fn line_too_long_rejects_or_truncates() {
        let l = Limits { max_line_size: bytesize::ByteSize::b(5), ..Limits::default() };
        let d =
            run(&l, &[("a", "1")], vec![entry(NOW, "12345"), entry(NOW, "123456"), entry(NOW, "1234567")]);
        assert_eq!(d.batch.entry_count(), 1);
        let r = only_rejection(&d);
        assert_eq!((r.reason, r.entries, r.bytes), (Reason::LineTooLong, 2, 13));
        assert!(r.message.contains("6 bytes") && r.message.contains("max_line_size = 5"), "{}", r.message);
        assert!(
            r.message.starts_with(r#"stream {a="1"}: 2 entries rejected (line_too_long)"#),
            "{}",
            r.message
        );

        let t = Limits { max_line_size_truncate: true, ..l.clone() };
        let d =
            run(&t, &[("a", "1")], vec![entry(NOW, "12345"), entry(NOW, "abcdéf"), entry(NOW, "1234567")]);
        assert!(d.rejected.is_empty());
        assert_eq!(d.truncated_lines, 2);
        let lines: Vec<_> = d.batch.streams[0].entries.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, ["12345", "abcd", "12345"]);

        let off = Limits { max_line_size: bytesize::ByteSize::b(0), ..Limits::default() };
        assert!(run(&off, &[("a", "1")], vec![entry(NOW, &"x".repeat(1 << 20))]).rejected.is_empty());
    }

    #[test]
    fn structured_metadata_limits() {
        let l = Limits {
            max_structured_metadata_size: bytesize::ByteSize::b(6),
            max_structured_metadata_entries_count: 2,
            ..Limits::default()
        };
        let with = |m: &[(&str, &str)]| Entry { timestamp_ns: NOW, line: "l".into(), metadata: pairs(m) };
        let d = run(
            &l,
            &[("a", "1")],
            vec![
                with(&[("ab", "cd")]),
                with(&[("abc", "defg")]),
                with(&[("a", "1"), ("b", "2"), ("c", "3")]),
                with(&[("a", "1"), ("b", "2")]),
            ],
        );
        assert_eq!(d.batch.entry_count(), 2);
        assert_eq!(d.rejected.len(), 2);
        assert_eq!(d.rejected[0].reason, Reason::StructuredMetadataTooLarge);
        assert!(d.rejected[0].message.contains("7 bytes") && d.rejected[0].message.contains("= 6 bytes"));
        assert_eq!(d.rejected[1].reason, Reason::StructuredMetadataTooMany);
        assert!(d.rejected[1].message.contains("3 structured metadata pairs"));
        assert!(d.rejected[1].message.contains("max_structured_metadata_entries_count = 2"));
    }

    #[test]
    fn stream_with_only_rejected_entries_is_omitted_and_empty_streams_ignored() {
        let d = run(&Limits::default(), &[("a", "1")], vec![entry(0, "x")]);
        assert!(d.batch.streams.is_empty());
        assert_eq!(d.rejected.len(), 1);
        let d = run(&Limits::default(), &[], Vec::new());
        assert!(d.batch.streams.is_empty() && d.rejected.is_empty());
    }

    #[test]
    fn long_label_strings_are_clipped_in_messages() {
        let l = Limits {
            max_label_value_length: 10_000,
            max_line_size: bytesize::ByteSize::b(1),
            ..Limits::default()
        };
        let long = "v".repeat(2000);
        let d = run(&l, &[("a", &long)], vec![entry(NOW, "xx")]);
        let r = only_rejection(&d);
        assert!(r.message.len() < 800 && r.message.contains('…'), "{}", r.message.len());
    }
}
