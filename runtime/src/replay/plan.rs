//! What to push and in what order: which records are selected, under which tenant, and how a
//! partition's entries become batches.
//!
//! Loki wants each stream's entries in time order (it refuses entries too far behind a stream's
//! newest one), so a partition's entries are grouped into streams by (tenant, labels), each
//! stream sorted by timestamp (stable: equal timestamps keep the order they were read in), and
//! cut into batches of at most `batch_size` bytes (lines and structured metadata, as the Loki
//! sink counts them) per tenant. Tenants, streams and entries are all in a fixed order, so the
//! same partition always gives the same batches: the checkpoint counts batches, and a resumed
//! replay skips exactly the ones Loki confirmed.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::archive::record::Record;
use crate::decode::is_valid_label_name;
use crate::model::{Batch, Entry, LabelSet, Pair, Stream};
use crate::route::Selector;

/// Loki's tenant when it runs without authentication; records without one go there.
pub const DEFAULT_TENANT: &str = "fake";

/// Which records are replayed, and where.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Inclusive, nanoseconds.
    pub since: Option<i64>,
    /// Exclusive, nanoseconds.
    pub until: Option<i64>,
    pub selector: Option<Selector>,
    /// Replaces every record's tenant.
    pub tenant: Option<String>,
}

/// What becomes of one record.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Outside the time range or the selector.
    NotSelected,
    /// Selected but not pushable: a reason (for counting) and what is wrong.
    Skip { reason: &'static str, detail: String },
    /// Push under this tenant with these labels.
    Push { tenant: String, labels: LabelSet },
}

impl Selection {
    pub fn judge(&self, record: &Record) -> Verdict {
        let ts = record.entry.timestamp_ns;
        if self.since.is_some_and(|s| ts < s) || self.until.is_some_and(|u| ts >= u) {
            return Verdict::NotSelected;
        }
        let labels = LabelSet::new(record.labels.clone());
        if self.selector.as_ref().is_some_and(|s| !s.matches(&labels)) {
            return Verdict::NotSelected;
        }
        if let Some((name, _)) = labels.pairs().iter().find(|(n, _)| !is_valid_label_name(n)) {
            let detail =
                format!("label name {name:?} is not valid (names must match [a-zA-Z_][a-zA-Z0-9_]*)");
            return Verdict::Skip { reason: "invalid_labels", detail };
        }
        // Loki treats a label with an empty value as absent, and needs at least one.
        let pairs: Vec<Pair> = labels.into_pairs().into_iter().filter(|(_, v)| !v.is_empty()).collect();
        if pairs.is_empty() {
            return Verdict::Skip {
                reason: "no_labels",
                detail: "the record has no labels (Loki needs one)".into(),
            };
        }
        let tenant =
            self.tenant.clone().or_else(|| record.tenant.clone()).unwrap_or_else(|| DEFAULT_TENANT.into());
        Verdict::Push { tenant, labels: LabelSet::new(pairs) }
    }
}

/// A partition's selected entries, by tenant and stream.
#[derive(Debug, Default)]
pub struct Streams {
    /// Keyed by tenant and sorted label pairs: the order batches are cut in.
    streams: BTreeMap<(String, Vec<Pair>), Vec<Entry>>,
}

impl Streams {
    pub fn add(&mut self, tenant: String, labels: LabelSet, entry: Entry) {
        self.streams.entry((tenant, labels.into_pairs())).or_default().push(entry);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.streams.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The batches, in push order (see the module docs). An entry larger than `max_bytes` is
    /// a batch of its own.
    pub fn into_batches(self, max_bytes: usize) -> Vec<Batch> {
        let mut out: Vec<Batch> = Vec::new();
        let mut current: Option<(Batch, usize)> = None;
        for ((tenant, pairs), mut entries) in self.streams {
            entries.sort_by_key(|e| e.timestamp_ns);
            let labels = LabelSet::new(pairs);
            if current.as_ref().is_some_and(|(b, _)| *b.tenant != *tenant) {
                out.extend(current.take().map(|(b, _)| b));
            }
            for entry in entries {
                let size = entry.line.len() + entry.metadata_size();
                let full = current
                    .as_ref()
                    .is_some_and(|(b, bytes)| !b.streams.is_empty() && bytes + size > max_bytes);
                if full {
                    out.extend(current.take().map(|(b, _)| b));
                }
                let (batch, bytes) =
                    current.get_or_insert_with(|| (Batch::new(Arc::from(tenant.as_str())), 0));
                *bytes += size;
                match batch.streams.last_mut() {
                    Some(s) if s.labels == labels => s.entries.push(entry),
                    _ => batch.streams.push(Stream { labels: labels.clone(), entries: vec![entry] }),
                }
            }
        }
        out.extend(current.map(|(b, _)| b));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tenant: Option<&str>, labels: &[(&str, &str)], ts: i64, line: &str) -> Record {
        Record {
            tenant: tenant.map(str::to_string),
            labels: labels.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            entry: Entry { timestamp_ns: ts, line: line.into(), metadata: vec![] },
        }
    }

    fn push(tenant: &str, labels: &[(&str, &str)]) -> Verdict {
        let pairs = labels.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        Verdict::Push { tenant: tenant.into(), labels: LabelSet::new(pairs) }
    }

    #[test]
    fn selects_by_time_and_selector_and_picks_the_tenant() {
        let s = Selection {
            since: Some(10),
            until: Some(20),
            selector: Some(Selector::parse(r#"{app="api"}"#).expect("parses")),
            tenant: None,
        };
        let api = [("app", "api")];
        assert_eq!(s.judge(&record(Some("t"), &api, 9, "l")), Verdict::NotSelected, "before since");
        assert_eq!(s.judge(&record(Some("t"), &api, 10, "l")), push("t", &api), "since is inclusive");
        assert_eq!(s.judge(&record(Some("t"), &api, 20, "l")), Verdict::NotSelected, "until is exclusive");
        assert_eq!(s.judge(&record(Some("t"), &[("app", "web")], 15, "l")), Verdict::NotSelected);
        assert_eq!(s.judge(&record(None, &api, 15, "l")), push(DEFAULT_TENANT, &api), "no tenant: fake");
        let s = Selection { tenant: Some("backfill".into()), ..Selection::default() };
        assert_eq!(
            s.judge(&record(Some("t"), &api, 15, "l")),
            push("backfill", &api),
            "--tenant overrides all"
        );
        assert_eq!(s.judge(&record(None, &api, 15, "l")), push("backfill", &api));
    }

    #[test]
    fn skips_labels_loki_would_refuse() {
        let s = Selection::default();
        let Verdict::Skip { reason, detail } = s.judge(&record(None, &[("bad-name", "x")], 1, "l")) else {
            panic!("skipped")
        };
        assert_eq!(reason, "invalid_labels");
        assert!(detail.contains("\"bad-name\""), "{detail}");
        assert!(matches!(s.judge(&record(None, &[], 1, "l")), Verdict::Skip { reason: "no_labels", .. }));
        assert!(matches!(
            s.judge(&record(None, &[("a", "")], 1, "l")),
            Verdict::Skip { reason: "no_labels", .. }
        ));
        assert_eq!(s.judge(&record(None, &[("a", ""), ("b", "x")], 1, "l")), push("fake", &[("b", "x")]));
    }

    fn add(streams: &mut Streams, tenant: &str, app: &str, ts: i64, line: &str) {
        let labels = LabelSet::new(vec![("app".into(), app.into())]);
        streams.add(tenant.into(), labels, Entry { timestamp_ns: ts, line: line.into(), metadata: vec![] });
    }

    /// `tenant app: lines` per stream of each batch.
    fn shape(batches: &[Batch]) -> Vec<Vec<String>> {
        batches
            .iter()
            .map(|b| {
                b.streams
                    .iter()
                    .map(|s| {
                        let lines: Vec<&str> = s.entries.iter().map(|e| e.line.as_str()).collect();
                        format!("{} {}: {}", b.tenant, s.labels.get("app").unwrap_or(""), lines.join(","))
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn orders_streams_by_time_and_cuts_batches_per_tenant_by_size() {
        let mut s = Streams::default();
        // Read out of order, across tenants and streams; equal timestamps keep read order.
        add(&mut s, "t2", "x", 5, "t2a");
        add(&mut s, "t1", "web", 3, "w3");
        add(&mut s, "t1", "api", 2, "a2");
        add(&mut s, "t1", "api", 1, "a1");
        add(&mut s, "t1", "api", 2, "a2'");
        add(&mut s, "t1", "web", 1, "w1");
        assert_eq!(s.len(), 6);
        let batches = s.into_batches(7);
        assert_eq!(
            shape(&batches),
            vec![
                vec!["t1 api: a1,a2,a2'".to_string()],
                vec!["t1 web: w1,w3".to_string()],
                vec!["t2 x: t2a".to_string()],
            ]
        );
        let mut s = Streams::default();
        add(&mut s, "t", "a", 1, "12345678");
        add(&mut s, "t", "a", 2, "1");
        add(&mut s, "t", "b", 1, "1");
        assert_eq!(
            shape(&s.into_batches(4)),
            vec![vec!["t a: 12345678".to_string()], vec!["t a: 1".to_string(), "t b: 1".to_string()]],
            "an oversized entry is a batch of its own; streams share a batch"
        );
    }

    #[test]
    fn batching_is_deterministic() {
        let build = || {
            let mut s = Streams::default();
            for i in 0..200 {
                let (t, a, ts) = (format!("t{}", i % 3), format!("app{}", i % 7), i64::from(i * 37 % 50));
                add(&mut s, &t, &a, ts, &format!("line {i:03}"));
            }
            s.into_batches(100)
        };
        let a = build();
        assert_eq!(a, build());
        let total: usize = a.iter().map(Batch::entry_count).sum();
        assert_eq!(total, 200);
        for b in &a {
            assert!(b.line_bytes() <= 100);
            for s in &b.streams {
                assert!(s.entries.windows(2).all(|w| w[0].timestamp_ns <= w[1].timestamp_ns));
            }
        }
    }
}
