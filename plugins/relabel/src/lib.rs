//! The `relabel` built-in: Prometheus-style relabelling rules over an entry's labels and
//! structured metadata, an allow-list of labels, and tenant rewriting.
//!
//! Rules run in order with Prometheus' semantics where they apply: the values of
//! `source_labels` are joined with `separator` (`;`), the fully anchored `regex` (`(.*)`) is
//! matched against the joined value, and `replacement` (`$1`, with `$1`, `${1}`, `${name}`
//! references) is written to `target_label`. A missing label reads as "", and writing "" removes a
//! label. `metadata.NAME` in `source_labels` or `target_label` is structured metadata `NAME`.
//!
//! Actions: `replace` (default), `keep`, `drop`, `keepequal`, `dropequal`, `labelkeep`,
//! `labeldrop`, `labelmap`, `lowercase`, `uppercase` (Prometheus'), and sluice's own
//! `to_metadata` (move labels into structured metadata), `to_label` (move structured metadata
//! into labels), `static` / `set` (fixed labels) and `tenant` (send the entry to another
//! tenant: sets the reserved label `__tenant_id__`, which sluice consumes after the last stage).
//!
//! After the rules, `labels_to_keep` (if set) removes every other label (or moves it into
//! structured metadata with `labels_to_metadata: true`), and labels starting with `__` are
//! removed, except `__tenant_id__`. An entry left without labels is dropped.
//!
//! The reference chain's step (`shared/BENCHMARK.md`):
//!
//! ```yaml
//! - plugin: relabel
//!   config:
//!     rules:
//!       - action: to_metadata
//!         labels: [pod]
//!     labels_to_keep: [namespace, app, container, job, level, service_name]
//! ```
//!
//! Labels belong to streams, so the rules that read only labels run once per stream of a batch
//! and their result is applied to each of its entries; from the first rule that reads structured
//! metadata on, rules run per entry. When all rules run per stream, outcomes are also remembered
//! across batches by tenant and label set. An entry whose labels and metadata come out unchanged
//! gets no setter call. See `README.md` for every key.

mod matcher;
mod pairs;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde::Deserialize;
use sluice_sdk::Labels;
use sluice_sdk::format::Pair;
use sluice_sdk::prelude::*;
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use crate::pairs::PairSet;
pub use crate::rules::{Action, RuleConfig};
use crate::rules::{Context, Rule, Scratch, State, is_valid_tenant};

/// The reserved label that moves an entry to another tenant; sluice removes it after the last
/// stage.
pub const TENANT_LABEL: &str = "__tenant_id__";

/// The configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The rules, run in order.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// After the rules, only these labels are kept (and `__tenant_id__`).
    #[serde(default)]
    pub labels_to_keep: Option<Vec<String>>,
    /// With `labels_to_keep`: move the other labels into structured metadata instead of
    /// removing them.
    #[serde(default)]
    pub labels_to_metadata: bool,
}

/// The relabel plugin.
#[derive(Debug)]
pub struct Relabel {
    rules: Vec<Rule>,
    /// Rules before this index read no structured metadata: they run once per stream.
    per_entry_from: usize,
    finish: Finish,
    /// The tenant of the batch being processed.
    tenant: String,
    /// The state of the current stream after the per-stream rules.
    stream: State,
    /// The state of one entry, for the per-entry rules.
    entry: State,
    /// What happens to the entries of the current stream, when the rules ran per stream.
    stream_outcome: Outcome,
    entry_outcome: Outcome,
    cache: Cache,
    scratch: Scratch,
    counts: Counts,
}

/// Outcomes of streams already seen, by tenant and labels: streams recur batch after batch, and
/// when every rule runs per stream an outcome depends on nothing else.
#[derive(Debug, Default)]
struct Cache {
    slots: HashMap<Box<[u8]>, usize, Xxh3DefaultBuilder>,
    outcomes: Vec<Outcome>,
    /// The key being built.
    key: Vec<u8>,
}

/// Streams remembered; past this the cache starts over.
const CACHE_STREAMS: usize = 4096;

impl Cache {
    /// The slot of the outcome for `tenant` and `labels`, if cached; the key is kept for
    /// [`Cache::insert`].
    fn get(&mut self, tenant: &str, labels: Labels<'_>) -> Option<usize> {
        self.key.clear();
        for s in std::iter::once(tenant).chain(labels.flat_map(|(n, v)| [n, v])) {
            // Length-prefixed, so that no two label sets make the same key.
            self.key.extend_from_slice(&(s.len() as u32).to_le_bytes());
            self.key.extend_from_slice(s.as_bytes());
        }
        self.slots.get(self.key.as_slice()).copied()
    }

    /// Remembers `outcome` under the key of the last [`Cache::get`]; its slot.
    fn insert(&mut self, outcome: &Outcome) -> usize {
        if self.outcomes.len() >= CACHE_STREAMS {
            self.slots.clear();
            self.outcomes.clear();
        }
        let mut copy = Outcome::default();
        copy.copy_from(outcome);
        self.outcomes.push(copy);
        self.slots.insert(self.key.as_slice().into(), self.outcomes.len() - 1);
        self.outcomes.len() - 1
    }
}

/// What runs after the rules.
#[derive(Debug)]
struct Finish {
    /// `labels_to_keep`, sorted.
    keep: Option<Vec<String>>,
    keep_to_metadata: bool,
}

/// The changes to make to an entry.
#[derive(Debug, Default)]
struct Outcome {
    drop: Option<DropReason>,
    /// Labels to set; an empty value removes.
    labels: PairSet,
    /// Structured metadata to set; an empty value removes.
    metadata: PairSet,
    /// The entry goes to another tenant.
    tenant_moved: bool,
    /// A rule made an invalid tenant id (the entry stays with its tenant).
    invalid_tenant: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropReason {
    /// A `keep`, `drop`, `keepequal` or `dropequal` rule.
    Rule,
    /// No label left.
    NoLabels,
}

/// Events counted over a batch.
#[derive(Debug, Default)]
struct Counts {
    dropped: u64,
    no_labels: u64,
    tenant: u64,
    invalid_tenant: u64,
}

impl Plugin for Relabel {
    type Config = Config;

    fn init(config: Config) -> Result<Self, Error> {
        if config.rules.is_empty() && config.labels_to_keep.is_none() {
            bail!("nothing to do: set `rules`, `labels_to_keep` or both");
        }
        if config.labels_to_metadata && config.labels_to_keep.is_none() {
            bail!(
                "`labels_to_metadata` applies to the labels `labels_to_keep` leaves out: set `labels_to_keep`"
            );
        }
        let rules = config
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| rules::compile(i, rule))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::msg)?;
        let per_entry_from = rules.iter().position(Rule::reads_metadata).unwrap_or(rules.len());
        let keep = config.labels_to_keep.map(rules::keep_list).transpose().map_err(Error::msg)?;
        Ok(Self {
            rules,
            per_entry_from,
            finish: Finish { keep, keep_to_metadata: config.labels_to_metadata },
            tenant: String::new(),
            stream: State::default(),
            entry: State::default(),
            stream_outcome: Outcome::default(),
            entry_outcome: Outcome::default(),
            cache: Cache::default(),
            scratch: Scratch::default(),
            counts: Counts::default(),
        })
    }

    /// One entry on its own: every rule, no per-stream cache; `__tenant_id__` reads as the tenant
    /// of the last batch. `process_batch` is what sluice calls.
    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        let Self { rules, finish, tenant, entry: state, entry_outcome: outcome, scratch, counts, .. } = self;
        state.labels.load(entry.labels());
        state.metadata.clear();
        state.dropped = false;
        state.invalid_tenant = false;
        let cx = Context { tenant, entry: Some(&*entry) };
        run(rules, state, cx, scratch);
        finish.apply(state, entry.labels(), tenant, outcome);
        outcome.apply(entry, counts)
    }

    fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        self.tenant.clear();
        self.tenant.push_str(batch.tenant());
        self.counts = Counts::default();
        let Self {
            rules,
            per_entry_from,
            finish,
            tenant,
            stream,
            entry: state,
            stream_outcome,
            entry_outcome,
            cache,
            scratch,
            counts,
        } = self;
        let (stream_rules, entry_rules) = rules.split_at_mut(*per_entry_from);
        let mut current = usize::MAX;
        let mut decided = Decided::PerEntry;
        batch.for_each_entry(|entry| {
            if entry.stream_index() != current {
                current = entry.stream_index();
                let cached = if entry_rules.is_empty() { cache.get(tenant, entry.labels()) } else { None };
                decided = match cached {
                    Some(slot) => Decided::Cached(slot),
                    None => {
                        stream.labels.load(entry.labels());
                        stream.metadata.clear();
                        stream.dropped = false;
                        stream.invalid_tenant = false;
                        run(stream_rules, stream, Context { tenant, entry: None }, scratch);
                        if entry_rules.is_empty() || stream.dropped {
                            finish.apply(stream, entry.labels(), tenant, stream_outcome);
                            if entry_rules.is_empty() {
                                Decided::Cached(cache.insert(stream_outcome))
                            } else {
                                Decided::Stream
                            }
                        } else {
                            Decided::PerEntry
                        }
                    }
                };
            }
            match decided {
                Decided::Cached(slot) => return cache.outcomes[slot].apply(entry, counts),
                Decided::Stream => return stream_outcome.apply(entry, counts),
                Decided::PerEntry => {}
            }
            state.copy_from(stream);
            run(entry_rules, state, Context { tenant, entry: Some(&*entry) }, scratch);
            finish.apply(state, entry.labels(), tenant, entry_outcome);
            entry_outcome.apply(entry, counts)
        })?;
        let Counts { dropped, no_labels, tenant, invalid_tenant } = self.counts;
        count("dropped", dropped);
        count("dropped:no_labels", no_labels);
        count("tenant", tenant);
        count("invalid_tenant", invalid_tenant);
        Ok(())
    }
}

/// Where the outcome of the current stream's entries comes from.
#[derive(Debug, Clone, Copy)]
enum Decided {
    /// Every rule ran per stream: this cache slot.
    Cached(usize),
    /// A per-stream rule dropped the stream: `stream_outcome`.
    Stream,
    /// The per-entry rules decide, entry by entry.
    PerEntry,
}

/// Runs `rules` in order until one drops the entry.
fn run(rules: &mut [Rule], state: &mut State, cx: Context<'_, '_>, scratch: &mut Scratch) {
    for rule in rules {
        if !rule.apply(state, cx, scratch) {
            return;
        }
    }
}

impl Finish {
    /// What `state` (after the rules) means for an entry whose labels were `original`: the
    /// allow-list, the removal of `__` labels, then the difference to the original labels.
    fn apply(&self, state: &mut State, original: Labels<'_>, tenant: &str, out: &mut Outcome) {
        out.drop = None;
        out.labels.clear();
        out.metadata.clear();
        out.tenant_moved = false;
        out.invalid_tenant = state.invalid_tenant;
        if state.dropped {
            out.drop = Some(DropReason::Rule);
            return;
        }
        let State { labels, metadata, .. } = state;
        labels.retain(|p| !p.name.starts_with("__") || p.name == TENANT_LABEL);
        if let Some(keep) = &self.keep {
            labels.retain(|p| {
                let kept = p.name == TENANT_LABEL || keep.binary_search(&p.name).is_ok();
                if !kept && self.keep_to_metadata {
                    metadata.put(&p.name, &p.value);
                }
                kept
            });
        }
        let had_tenant = original.clone().any(|(n, _)| n == TENANT_LABEL);
        match labels.get(TENANT_LABEL) {
            Some(t) if !is_valid_tenant(t) => {
                labels.remove(TENANT_LABEL);
                out.invalid_tenant = true;
            }
            // Setting the batch's own tenant is no move: leave the entry alone.
            Some(t) if t == tenant && !had_tenant => {
                labels.remove(TENANT_LABEL);
            }
            _ => {}
        }
        let tenant_only = labels.len() == 1 && labels.get(TENANT_LABEL).is_some();
        if labels.is_empty() || tenant_only {
            out.drop = Some(DropReason::NoLabels);
            return;
        }
        diff(original, labels.as_slice(), &mut out.labels);
        out.tenant_moved = out.labels.get(TENANT_LABEL).is_some_and(|t| !t.is_empty());
        out.metadata.copy_from(metadata);
    }
}

/// The label changes from `original` to `new`, both sorted by name: new values, and "" for
/// removed labels.
fn diff<'a>(original: impl Iterator<Item = Pair<'a>>, new: &[pairs::Pair], out: &mut PairSet) {
    let mut original = original.peekable();
    let mut new = new.iter().peekable();
    loop {
        match (original.peek(), new.peek()) {
            (None, None) => return,
            (Some((name, _)), None) => {
                out.put(name, "");
                original.next();
            }
            (None, Some(p)) => {
                out.put(&p.name, &p.value);
                new.next();
            }
            (Some((name, value)), Some(p)) => match (*name).cmp(p.name.as_str()) {
                std::cmp::Ordering::Less => {
                    out.put(name, "");
                    original.next();
                }
                std::cmp::Ordering::Greater => {
                    out.put(&p.name, &p.value);
                    new.next();
                }
                std::cmp::Ordering::Equal => {
                    if *value != p.value {
                        out.put(&p.name, &p.value);
                    }
                    original.next();
                    new.next();
                }
            },
        }
    }
}

impl Outcome {
    fn copy_from(&mut self, other: &Outcome) {
        self.drop = other.drop;
        self.labels.copy_from(&other.labels);
        self.metadata.copy_from(&other.metadata);
        self.tenant_moved = other.tenant_moved;
        self.invalid_tenant = other.invalid_tenant;
    }

    /// Makes the changes to `entry`, calling a setter only for what differs.
    fn apply(&self, entry: &mut Entry<'_>, counts: &mut Counts) -> Result<Verdict, Error> {
        counts.invalid_tenant += u64::from(self.invalid_tenant);
        match self.drop {
            Some(DropReason::Rule) => {
                counts.dropped += 1;
                return Ok(Verdict::Drop);
            }
            Some(DropReason::NoLabels) => {
                counts.no_labels += 1;
                return Ok(Verdict::Drop);
            }
            None => {}
        }
        counts.tenant += u64::from(self.tenant_moved);
        for p in self.labels.as_slice() {
            if p.value.is_empty() {
                entry.remove_label(&p.name);
            } else {
                entry.set_label(&p.name, &p.value)?;
            }
        }
        for p in self.metadata.as_slice() {
            if p.value.is_empty() {
                entry.remove_metadata(&p.name);
            } else if entry.metadata_value(&p.name) != Some(p.value.as_str()) {
                entry.set_metadata(&p.name, &p.value)?;
            }
        }
        Ok(Verdict::Keep)
    }
}

sluice_sdk::export!(Relabel);
