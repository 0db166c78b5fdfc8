//! What a replay did, counted as it goes, and the summary printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::explain::{self, Cause};

/// Counters of one run.
#[derive(Debug, Default)]
pub struct Report {
    /// Objects listed.
    pub objects_listed: usize,
    /// Skipped without reading: their partition is outside `--since`/`--until`.
    pub objects_pruned: usize,
    /// Skipped without reading: their partition was replayed by an earlier run.
    pub objects_done_before: usize,
    pub objects_read: usize,
    pub bytes_read: u64,
    /// Objects that could not be decompressed: count and the first message.
    pub objects_unreadable: usize,
    pub first_unreadable: Option<String>,
    pub lines_unparseable: usize,
    pub first_unparseable: Option<String>,
    pub entries_read: usize,
    /// In the time range and matching the selector.
    pub selected: usize,
    /// Entries of batches an earlier run had confirmed (skipped again now).
    pub pushed_before: usize,
    pub pushed: usize,
    /// Selected but not pushable, by reason: count and the first detail.
    pub skipped: BTreeMap<&'static str, (usize, String)>,
    /// Refused by Loki or undeliverable, by reason.
    pub dropped: BTreeMap<String, usize>,
    /// Why, by cause: the first line of Loki's messages that showed it.
    pub causes: BTreeMap<Cause, String>,
    /// Dropped entries whose message matched no known cause: the first such message.
    pub unexplained: Option<String>,
    /// Why the run stopped before the end, if it did.
    pub stopped: Option<String>,
}

impl Report {
    pub fn skip(&mut self, reason: &'static str, detail: String) {
        self.skipped.entry(reason).or_insert((0, detail)).0 += 1;
    }

    /// Records a batch's drops: `dropped` by reason, and Loki's `message` explained (a 400
    /// lists one refused stream per line, each may have another cause).
    pub fn dropped(&mut self, dropped: &[(String, usize)], message: Option<&str>) {
        let message = message.unwrap_or("");
        let mut explained = false;
        for (reason, n) in dropped {
            *self.dropped.entry(reason.clone()).or_default() += n;
            for line in message.lines().chain(message.is_empty().then_some("")) {
                for cause in explain::causes(reason, line) {
                    explained = true;
                    self.causes.entry(cause).or_insert_with(|| line.to_string());
                }
            }
        }
        if !explained && !dropped.is_empty() && self.unexplained.is_none() {
            self.unexplained = Some(message.to_string());
        }
    }

    fn dropped_total(&self) -> usize {
        self.dropped.values().sum()
    }

    fn skipped_total(&self) -> usize {
        self.skipped.values().map(|(n, _)| n).sum()
    }

    /// Whether everything selected was pushed and everything listed could be read.
    pub fn complete_success(&self) -> bool {
        self.stopped.is_none()
            && self.dropped_total() == 0
            && self.skipped_total() == 0
            && self.objects_unreadable == 0
            && self.lines_unparseable == 0
    }

    /// The summary, for stderr.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "replay summary:");
        let mut objects = format!("{} read ({})", self.objects_read, bytesize::ByteSize(self.bytes_read));
        if self.objects_pruned > 0 {
            let _ = write!(objects, ", {} outside --since/--until (not read)", self.objects_pruned);
        }
        if self.objects_done_before > 0 {
            let _ = write!(objects, ", {} replayed by an earlier run (not read)", self.objects_done_before);
        }
        if self.objects_unreadable > 0 {
            let _ = write!(objects, ", {} unreadable and skipped", self.objects_unreadable);
        }
        let _ = writeln!(out, "  objects:  {} listed, {objects}", self.objects_listed);
        let mut entries =
            format!("{} read, {} selected, {} pushed", self.entries_read, self.selected, self.pushed);
        if self.pushed_before > 0 {
            let _ = write!(entries, ", {} pushed by an earlier run", self.pushed_before);
        }
        let _ = writeln!(out, "  entries:  {entries}");
        for (reason, (n, detail)) in &self.skipped {
            let _ = writeln!(out, "  skipped:  {n} {reason} (not pushed), e.g. {detail}");
        }
        for (reason, n) in &self.dropped {
            let _ = writeln!(out, "  dropped:  {n} {reason}");
        }
        if self.lines_unparseable > 0 {
            let first = self.first_unparseable.as_deref().unwrap_or("");
            let _ = writeln!(out, "  unparseable lines: {}, the first: {first}", self.lines_unparseable);
        }
        if let Some(first) = &self.first_unreadable {
            let _ = writeln!(out, "  unreadable objects: {}, the first: {first}", self.objects_unreadable);
        }
        if !self.causes.is_empty() {
            let _ = writeln!(out, "why Loki refused entries:");
        }
        for (cause, line) in &self.causes {
            let _ = writeln!(out, "  Loki: {}", shorten(line));
            wrap(&mut out, cause.advice(), "    → ", "      ");
        }
        if let Some(message) = &self.unexplained {
            let _ = writeln!(out, "  Loki said: {}", shorten(message.lines().next().unwrap_or("")));
        }
        out
    }
}

/// At most 300 characters of a line of Loki's.
fn shorten(line: &str) -> String {
    let mut short: String = line.chars().take(300).collect();
    if short.len() < line.len() {
        short.push_str(" …");
    }
    short
}

/// Appends `text` wrapped at 100 columns, the first line after `first`, the others after `rest`.
fn wrap(out: &mut String, text: &str, first: &str, rest: &str) {
    const WIDTH: usize = 100;
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_each_cause_once_with_the_line_that_showed_it() {
        let mut r = Report::default();
        let old = "400 Bad Request: entry for stream '{a=\"b\"}' has timestamp too old: 1\nentry too far behind, entry timestamp is: 2";
        r.dropped(&[("rejected".into(), 3)], Some(old));
        r.dropped(&[("rejected".into(), 2)], Some("400 Bad Request: timestamp too old: 2"));
        r.dropped(&[("weird".into(), 1)], Some("teapot"));
        assert_eq!(r.dropped.get("rejected"), Some(&5));
        assert_eq!(r.causes.len(), 2);
        assert_eq!(
            r.causes.get(&Cause::Behind).map(String::as_str),
            Some("entry too far behind, entry timestamp is: 2")
        );
        assert_eq!(r.unexplained.as_deref(), Some("teapot"));
        assert!(!r.complete_success());
        let text = r.render();
        assert!(
            text.contains("  Loki: 400 Bad Request: entry for stream '{a=\"b\"}' has timestamp too old: 1\n"),
            "{text}"
        );
        assert!(text.contains("reject_old_samples_max_age"), "{text}");
        assert!(text.contains("dropped:  5 rejected"), "{text}");
        assert!(text.contains("Loki said: teapot"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= 100 || l.starts_with("  Loki")), "{text}");
    }

    #[test]
    fn an_empty_message_still_explains_by_reason() {
        let mut r = Report::default();
        r.dropped(&[("unauthorized".into(), 4)], None);
        assert!(r.causes.contains_key(&Cause::Auth));
        assert_eq!(r.unexplained, None);
    }

    #[test]
    fn success_needs_nothing_lost() {
        let mut r = Report { pushed: 3, selected: 3, ..Report::default() };
        assert!(r.complete_success());
        r.skip("invalid_labels", "label name \"a-b\"".into());
        r.skip("invalid_labels", "another".into());
        assert!(!r.complete_success());
        assert!(
            r.render().contains("skipped:  2 invalid_labels (not pushed), e.g. label name \"a-b\""),
            "{}",
            r.render()
        );
        let r = Report { lines_unparseable: 1, ..Report::default() };
        assert!(!r.complete_success());
    }
}
