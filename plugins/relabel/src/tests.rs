use sluice_sdk::native::NativePlugin;
use sluice_sdk::testing::{self, Outcome, Status, TestBatch};

use super::*;

type Owned = Vec<(String, String)>;

fn pairs(p: &[(&str, &str)]) -> Owned {
    p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

fn relabel(config: &str) -> NativePlugin<Relabel> {
    testing::plugin::<Relabel>(config)
}

fn run(config: &str, batch: &TestBatch) -> Outcome {
    testing::run(&mut relabel(config), batch)
}

/// One stream `{app="api", env="prod", namespace="shop"}` with one line.
fn one_stream() -> TestBatch {
    TestBatch::new().stream(&[("app", "api"), ("env", "prod"), ("namespace", "shop")]).line("l1")
}

/// The labels of the only entry after running `config` over [`one_stream`].
fn labels_after(config: &str) -> Owned {
    let out = run(config, &one_stream());
    assert_eq!(out.entries.len(), 1);
    out.entries[0].labels.clone()
}

fn init_error(config: &str) -> String {
    testing::init_error::<Relabel>(config)
}

const REFERENCE: &str = r#"{
    "rules": [{"action": "to_metadata", "labels": ["pod"]}],
    "labels_to_keep": ["namespace", "app", "container", "job", "level", "service_name"]
}"#;

#[test]
fn reference_chain_moves_pod_to_metadata_and_keeps_the_allow_list() {
    let pod_a = [
        ("app", "vllm-server"),
        ("container", "main"),
        ("job", "inference/vllm-server"),
        ("level", "info"),
        ("namespace", "inference"),
        ("node", "n1"),
        ("pod", "vllm-server-abc-1"),
        ("service_name", "vllm-server"),
    ];
    let batch = TestBatch::new()
        .stream(&pod_a)
        .entry(1, "a1", &[("trace_id", "t1")])
        .entry(2, "a2", &[])
        .stream(&[("app", "trainer"), ("namespace", "training"), ("pod", "trainer-x")])
        .entry(3, "b1", &[("pod", "stale"), ("request_id", "r1")]);
    let out = run(REFERENCE, &batch);
    let kept = pairs(&[
        ("app", "vllm-server"),
        ("container", "main"),
        ("job", "inference/vllm-server"),
        ("level", "info"),
        ("namespace", "inference"),
        ("service_name", "vllm-server"),
    ]);
    assert_eq!(out.lines(), ["a1", "a2", "b1"]);
    assert!(out.entries.iter().all(|e| e.status == Status::Changed));
    assert_eq!(out.entries[0].labels, kept);
    assert_eq!(out.entries[0].metadata, pairs(&[("trace_id", "t1"), ("pod", "vllm-server-abc-1")]));
    assert_eq!(out.entries[1].labels, kept);
    assert_eq!(out.entries[1].metadata, pairs(&[("pod", "vllm-server-abc-1")]));
    assert_eq!(out.entries[2].labels, pairs(&[("app", "trainer"), ("namespace", "training")]));
    assert_eq!(
        out.entries[2].metadata,
        pairs(&[("pod", "trainer-x"), ("request_id", "r1")]),
        "the label's value replaces the metadata's"
    );
    assert!(out.counts.is_empty(), "{:?}", out.counts);
}

#[test]
fn an_entry_whose_labels_do_not_change_is_left_alone() {
    let batch = TestBatch::new().stream(&[("app", "api"), ("namespace", "shop")]).line("x");
    let out = run(REFERENCE, &batch);
    assert_eq!(out.entries[0].status, Status::Kept);
    let out = run(r#"{"rules": [{"action": "static", "labels": {"app": "api"}}]}"#, &batch);
    assert_eq!(out.entries[0].status, Status::Kept, "setting a label to its value is no change");
}

// --- replace, Prometheus semantics ---

#[test]
fn replace_joins_sources_with_the_separator() {
    let labels =
        labels_after(r#"{"rules": [{"source_labels": ["namespace", "app"], "target_label": "path"}]}"#);
    assert_eq!(labels.iter().find(|(n, _)| n == "path").map(|(_, v)| v.as_str()), Some("shop;api"));
    let labels = labels_after(
        r#"{"rules": [{"source_labels": ["namespace", "missing", "app"], "separator": "/", "target_label": "path"}]}"#,
    );
    assert_eq!(
        labels.iter().find(|(n, _)| n == "path").map(|(_, v)| v.as_str()),
        Some("shop//api"),
        "a missing label joins as empty"
    );
}

#[test]
fn replace_regex_is_fully_anchored() {
    let config = r#"{"rules": [{"source_labels": ["app"], "regex": "ap", "target_label": "hit", "replacement": "yes"}]}"#;
    let out = run(config, &one_stream());
    assert_eq!(out.entries[0].status, Status::Kept, "`ap` does not match `api`");
    let config = r#"{"rules": [{"source_labels": ["app"], "regex": "ap.", "target_label": "hit", "replacement": "yes"}]}"#;
    assert_eq!(
        labels_after(config),
        pairs(&[("app", "api"), ("env", "prod"), ("hit", "yes"), ("namespace", "shop")])
    );
    let config = r#"{"rules": [{"source_labels": ["app"], "regex": "x|api", "target_label": "hit", "replacement": "$0"}]}"#;
    assert!(labels_after(config).contains(&("hit".into(), "api".into())), "alternation inside the anchors");
}

#[test]
fn replace_templates() {
    let rule = |regex: &str, replacement: &str| {
        let config = serde_json::json!({"rules": [{
            "source_labels": ["namespace", "app"], "regex": regex, "target_label": "out", "replacement": replacement
        }]});
        labels_after(&config.to_string()).into_iter().find(|(n, _)| n == "out").map(|(_, v)| v)
    };
    assert_eq!(rule("(.*);(.*)", "$2.$1").as_deref(), Some("api.shop"));
    assert_eq!(rule("(.*);(.*)", "${2}x").as_deref(), Some("apix"));
    assert_eq!(rule("(?P<ns>.*);(?P<app>.*)", "${app}-${ns}").as_deref(), Some("api-shop"));
    assert_eq!(rule("(.*);(.*)", "$2x-$1").as_deref(), Some("-shop"), "`$2x` is group `2x`, absent");
    assert_eq!(rule("(.*);(.*)", "$$1").as_deref(), Some("$1"));
    assert_eq!(rule("(.*)", "fixed").as_deref(), Some("fixed"));
    assert_eq!(rule("(.*)", "$1").as_deref(), Some("shop;api"), "the default regex and replacement");
}

#[test]
fn replace_with_an_empty_result_removes_the_target() {
    let config = r#"{"rules": [{"source_labels": ["app"], "target_label": "env", "replacement": ""}]}"#;
    assert_eq!(labels_after(config), pairs(&[("app", "api"), ("namespace", "shop")]));
    let config = r#"{"rules": [{"source_labels": ["missing"], "target_label": "env"}]}"#;
    assert_eq!(
        labels_after(config),
        pairs(&[("app", "api"), ("namespace", "shop")]),
        "`(.*)` matches the empty value of a missing label and `$1` is empty"
    );
}

#[test]
fn replace_without_a_match_changes_nothing() {
    let config = r#"{"rules": [{"source_labels": ["env"], "regex": "dev", "target_label": "env", "replacement": "development"}]}"#;
    let out = run(config, &one_stream());
    assert_eq!(out.entries[0].status, Status::Kept);
}

#[test]
fn replace_target_label_can_be_a_template() {
    let config = r#"{"rules": [{"source_labels": ["app"], "regex": "(.*)", "target_label": "seen_${1}", "replacement": "1"}]}"#;
    assert!(labels_after(config).contains(&("seen_api".into(), "1".into())));
    // A template that gives an invalid name is skipped, as in Prometheus.
    let config = r#"{"rules": [{"source_labels": ["job"], "target_label": "${1}", "replacement": "x"}]}"#;
    let batch = TestBatch::new().stream(&[("job", "a/b")]).line("l");
    assert_eq!(run(config, &batch).entries[0].status, Status::Kept);
}

#[test]
fn rules_run_in_order_and_see_earlier_changes() {
    let config = r#"{"rules": [
        {"source_labels": ["app"], "target_label": "service"},
        {"source_labels": ["service", "env"], "separator": "@", "target_label": "id"},
        {"action": "labeldrop", "regex": "service"}
    ]}"#;
    assert_eq!(
        labels_after(config),
        pairs(&[("app", "api"), ("env", "prod"), ("id", "api@prod"), ("namespace", "shop")])
    );
}

// --- keep / drop ---

#[test]
fn keep_and_drop_decide_per_stream() {
    let batch = TestBatch::new()
        .stream(&[("app", "api"), ("env", "prod")])
        .line("a1")
        .line("a2")
        .stream(&[("app", "db"), ("env", "dev")])
        .line("d1")
        .stream(&[("app", "web")])
        .line("w1");
    let keep =
        run(r#"{"rules": [{"action": "keep", "source_labels": ["env"], "regex": "prod|dev"}]}"#, &batch);
    assert_eq!(keep.lines(), ["a1", "a2", "d1"]);
    assert_eq!(keep.count("dropped"), 1);
    let drop =
        run(r#"{"rules": [{"action": "drop", "source_labels": ["app", "env"], "regex": "db;.*"}]}"#, &batch);
    assert_eq!(drop.lines(), ["a1", "a2", "w1"]);
    assert_eq!(drop.count("dropped"), 1);
    let anchored = run(r#"{"rules": [{"action": "drop", "source_labels": ["app"], "regex": "a"}]}"#, &batch);
    assert!(anchored.dropped_lines().is_empty(), "`a` does not match `api`");
}

#[test]
fn a_dropped_stream_stops_the_rules() {
    let config = r#"{"rules": [
        {"action": "drop", "source_labels": ["app"], "regex": "api"},
        {"action": "tenant", "replacement": "other"}
    ]}"#;
    let out = run(config, &one_stream());
    assert_eq!(out.dropped_lines(), ["l1"]);
    assert_eq!(out.count("tenant"), 0);
}

#[test]
fn keepequal_and_dropequal_compare_with_the_target() {
    let batch = TestBatch::new()
        .stream(&[("app", "api"), ("service", "api")])
        .line("same")
        .stream(&[("app", "api"), ("service", "web")])
        .line("different");
    let keep = run(
        r#"{"rules": [{"action": "keepequal", "source_labels": ["app"], "target_label": "service"}]}"#,
        &batch,
    );
    assert_eq!(keep.lines(), ["same"]);
    let drop = run(
        r#"{"rules": [{"action": "dropequal", "source_labels": ["app"], "target_label": "service"}]}"#,
        &batch,
    );
    assert_eq!(drop.lines(), ["different"]);
    assert_eq!(drop.count("dropped"), 1);
}

// --- label names ---

#[test]
fn labelkeep_and_labeldrop_match_whole_names() {
    let config = r#"{"rules": [{"action": "labelkeep", "regex": "app|namespace"}]}"#;
    assert_eq!(labels_after(config), pairs(&[("app", "api"), ("namespace", "shop")]));
    let config = r#"{"rules": [{"action": "labeldrop", "regex": "e.*"}]}"#;
    assert_eq!(labels_after(config), pairs(&[("app", "api"), ("namespace", "shop")]));
    let config = r#"{"rules": [{"action": "labeldrop", "regex": "ap"}]}"#;
    assert_eq!(run(config, &one_stream()).entries[0].status, Status::Kept, "anchored: `ap` is not `app`");
}

#[test]
fn labelmap_copies_matching_labels_under_new_names() {
    let batch =
        TestBatch::new().stream(&[("k8s_team", "core"), ("k8s_tier", "web"), ("app", "api")]).line("l");
    let out = run(r#"{"rules": [{"action": "labelmap", "regex": "k8s_(.+)"}]}"#, &batch);
    assert_eq!(
        out.entries[0].labels,
        pairs(&[
            ("app", "api"),
            ("k8s_team", "core"),
            ("k8s_tier", "web"),
            ("team", "core"),
            ("tier", "web")
        ])
    );
    let out = run(
        r#"{"rules": [{"action": "labelmap", "regex": "k8s_(.+)", "replacement": "kube_$1"}, {"action": "labeldrop", "regex": "k8s_.*"}]}"#,
        &batch,
    );
    assert_eq!(out.entries[0].labels, pairs(&[("app", "api"), ("kube_team", "core"), ("kube_tier", "web")]));
}

#[test]
fn lowercase_and_uppercase() {
    let batch = TestBatch::new().stream(&[("app", "Api-ÄÖ"), ("env", "prod")]).line("l");
    let out = run(
        r#"{"rules": [{"action": "lowercase", "source_labels": ["app"], "target_label": "app"}]}"#,
        &batch,
    );
    assert_eq!(out.entries[0].label("app"), Some("api-äö"));
    let out = run(
        r#"{"rules": [{"action": "uppercase", "source_labels": ["app", "env"], "separator": "_", "target_label": "key"}]}"#,
        &batch,
    );
    assert_eq!(out.entries[0].label("key"), Some("API-ÄÖ_PROD"));
}

// --- metadata ---

#[test]
fn to_metadata_moves_listed_and_matching_labels() {
    let config = r#"{"rules": [{"action": "to_metadata", "labels": ["env"], "regex": "name.*"}]}"#;
    let out = run(config, &one_stream());
    assert_eq!(out.entries[0].labels, pairs(&[("app", "api")]));
    assert_eq!(out.entries[0].metadata, pairs(&[("env", "prod"), ("namespace", "shop")]));
}

#[test]
fn to_label_moves_metadata_into_labels_per_entry() {
    let batch = TestBatch::new()
        .stream(&[("app", "api")])
        .entry(1, "a", &[("user", "u1"), ("trace_id", "t1")])
        .entry(2, "b", &[("trace_id", "t2")])
        .entry(3, "c", &[("user", "")]);
    let out = run(r#"{"rules": [{"action": "to_label", "metadata": ["user"]}]}"#, &batch);
    assert_eq!(out.entries[0].labels, pairs(&[("app", "api"), ("user", "u1")]));
    assert_eq!(out.entries[0].metadata, pairs(&[("trace_id", "t1")]));
    assert_eq!(out.entries[1].status, Status::Kept);
    assert_eq!(out.entries[2].status, Status::Kept, "an empty value makes no label");
    let out = run(r#"{"rules": [{"action": "to_label", "regex": "tr.*"}]}"#, &batch);
    assert_eq!(out.entries[0].labels, pairs(&[("app", "api"), ("trace_id", "t1")]));
    assert_eq!(out.entries[0].metadata, pairs(&[("user", "u1")]));
    assert_eq!(out.entries[1].labels, pairs(&[("app", "api"), ("trace_id", "t2")]));
    assert!(out.entries[1].metadata.is_empty());
}

#[test]
fn metadata_as_source_and_target() {
    let batch = TestBatch::new()
        .stream(&[("app", "api")])
        .entry(1, "a", &[("trace_id", "abcdef"), ("env", "dev")])
        .entry(2, "b", &[("trace_id", "123456")]);
    let config = r#"{"rules": [
        {"source_labels": ["metadata.trace_id"], "regex": "(..).*", "target_label": "metadata.trace_prefix"},
        {"source_labels": ["app", "metadata.env"], "target_label": "where"},
        {"source_labels": ["metadata.nothing"], "target_label": "metadata.env"}
    ]}"#;
    let out = run(config, &batch);
    assert_eq!(out.entries[0].metadata, pairs(&[("trace_id", "abcdef"), ("trace_prefix", "ab")]));
    assert_eq!(out.entries[0].label("where"), Some("api;dev"));
    assert_eq!(out.entries[1].metadata, pairs(&[("trace_id", "123456"), ("trace_prefix", "12")]));
    assert_eq!(out.entries[1].label("where"), Some("api;"));
    let out =
        run(r#"{"rules": [{"action": "drop", "source_labels": ["metadata.env"], "regex": "dev"}]}"#, &batch);
    assert_eq!(out.lines(), ["b"], "keep and drop on metadata decide per entry");
    assert_eq!(out.count("dropped"), 1);
}

#[test]
fn per_entry_rules_see_what_the_per_stream_rules_did() {
    let batch = TestBatch::new()
        .stream(&[("app", "api"), ("pod", "api-1")])
        .entry(1, "a", &[("zone", "eu")])
        .entry(2, "b", &[]);
    let config = r#"{"rules": [
        {"action": "to_metadata", "labels": ["pod"]},
        {"source_labels": ["metadata.pod", "metadata.zone"], "separator": "@", "target_label": "where"},
        {"action": "static", "labels": {"team": "core"}}
    ]}"#;
    let out = run(config, &batch);
    assert_eq!(out.entries[0].labels, pairs(&[("app", "api"), ("team", "core"), ("where", "api-1@eu")]));
    assert_eq!(out.entries[0].metadata, pairs(&[("zone", "eu"), ("pod", "api-1")]));
    assert_eq!(out.entries[1].labels, pairs(&[("app", "api"), ("team", "core"), ("where", "api-1@")]));
    assert_eq!(out.entries[1].metadata, pairs(&[("pod", "api-1")]));
}

// --- static, temporaries, allow-list ---

#[test]
fn static_sets_and_empty_values_remove() {
    let config = r#"{"rules": [{"action": "set", "labels": {"team": "payments", "env": ""}}]}"#;
    assert_eq!(labels_after(config), pairs(&[("app", "api"), ("namespace", "shop"), ("team", "payments")]));
}

#[test]
fn double_underscore_labels_are_temporaries() {
    let config = r#"{"rules": [
        {"source_labels": ["app"], "target_label": "__tmp", "replacement": "svc-$1"},
        {"source_labels": ["__tmp"], "target_label": "service"}
    ]}"#;
    let batch = TestBatch::new().stream(&[("app", "api"), ("__meta_x", "y")]).line("l");
    let out = run(config, &batch);
    assert_eq!(out.entries[0].labels, pairs(&[("app", "api"), ("service", "svc-api")]));
}

#[test]
fn labels_to_keep_drops_or_moves_the_rest() {
    assert_eq!(labels_after(r#"{"labels_to_keep": ["app", "absent"]}"#), pairs(&[("app", "api")]));
    let out = run(r#"{"labels_to_keep": ["app"], "labels_to_metadata": true}"#, &one_stream());
    assert_eq!(out.entries[0].labels, pairs(&[("app", "api")]));
    assert_eq!(out.entries[0].metadata, pairs(&[("env", "prod"), ("namespace", "shop")]));
}

#[test]
fn an_entry_left_without_labels_is_dropped_and_counted() {
    let out = run(r#"{"labels_to_keep": ["nothing"]}"#, &one_stream());
    assert_eq!(out.dropped_lines(), ["l1"]);
    assert_eq!(out.counts, [("dropped:no_labels".to_string(), 1)]);
    let out = run(
        r#"{"labels_to_keep": ["nothing"], "rules": [{"action": "tenant", "replacement": "t2"}]}"#,
        &one_stream(),
    );
    assert_eq!(out.dropped_lines(), ["l1"], "`__tenant_id__` alone is no label");
}

// --- tenant ---

#[test]
fn tenant_rule_sets_the_reserved_label() {
    let batch = TestBatch::new()
        .tenant("shared")
        .stream(&[("app", "api"), ("namespace", "team-payments")])
        .line("p1")
        .line("p2")
        .stream(&[("app", "web"), ("namespace", "platform")])
        .line("w1");
    let config = r#"{"rules": [{"action": "tenant", "source_labels": ["namespace"], "regex": "team-(.+)"}]}"#;
    let out = run(config, &batch);
    assert_eq!(
        out.entries[0].labels,
        pairs(&[("__tenant_id__", "payments"), ("app", "api"), ("namespace", "team-payments")])
    );
    assert_eq!(out.entries[1].label(TENANT_LABEL), Some("payments"));
    assert_eq!(out.entries[2].status, Status::Kept, "no match: the tenant stays");
    assert_eq!(out.counts, [("tenant".to_string(), 2)]);

    let config = r#"{"rules": [{"action": "tenant", "source_labels": ["app"], "regex": "web", "replacement": "frontend"}]}"#;
    let out = run(config, &batch);
    assert_eq!(out.entries[2].label(TENANT_LABEL), Some("frontend"));
    assert_eq!(out.entries[0].status, Status::Kept);
}

#[test]
fn tenant_rules_survive_label_rules_and_the_allow_list() {
    let config = r#"{
        "rules": [
            {"action": "tenant", "replacement": "t2"},
            {"action": "labeldrop", "regex": "__.*"},
            {"action": "labelkeep", "regex": "app"}
        ],
        "labels_to_keep": ["app"]
    }"#;
    assert_eq!(labels_after(config), pairs(&[("__tenant_id__", "t2"), ("app", "api")]));
}

#[test]
fn the_batch_tenant_reads_as_tenant_id_and_is_no_move() {
    let batch = TestBatch::new().tenant("acme").stream(&[("app", "api")]).line("l");
    let config = r#"{"rules": [{"source_labels": ["__tenant_id__"], "target_label": "org"}]}"#;
    assert_eq!(run(config, &batch).entries[0].labels, pairs(&[("app", "api"), ("org", "acme")]));
    let config = r#"{"rules": [{"action": "tenant", "replacement": "acme"}]}"#;
    let out = run(config, &batch);
    assert_eq!(out.entries[0].status, Status::Kept);
    assert!(out.counts.is_empty());
    let config =
        r#"{"rules": [{"action": "tenant", "source_labels": ["__tenant_id__", "app"], "separator": "-"}]}"#;
    assert_eq!(run(config, &batch).entries[0].label(TENANT_LABEL), Some("acme-api"));
}

#[test]
fn an_invalid_tenant_leaves_the_tenant_and_is_counted() {
    let batch = TestBatch::new().stream(&[("app", "api"), ("job", "ns/api")]).line("l");
    let config = r#"{"rules": [
        {"action": "tenant", "replacement": "good"},
        {"action": "tenant", "source_labels": ["job"]}
    ]}"#;
    let out = run(config, &batch);
    assert_eq!(out.entries[0].label(TENANT_LABEL), Some("good"), "the invalid value does not replace it");
    assert_eq!(out.count("invalid_tenant"), 1);
    // Written by a plain `replace`, an invalid tenant is removed at the end.
    let config = r#"{"rules": [{"source_labels": ["job"], "target_label": "__tenant_id__"}]}"#;
    let out = run(config, &batch);
    assert_eq!(out.entries[0].status, Status::Kept);
    assert_eq!(out.count("invalid_tenant"), 1);
}

#[test]
fn the_cached_per_stream_path_equals_running_every_rule_per_entry() {
    /// Relabel through `process` only, one entry at a time.
    struct PerEntry(Relabel);
    impl Plugin for PerEntry {
        type Config = Config;
        fn init(config: Config) -> Result<Self, Error> {
            Relabel::init(config).map(Self)
        }
        fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
            self.0.process(entry)
        }
        fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
            self.0.tenant = batch.tenant().to_string();
            batch.for_each_entry(|e| self.0.process(e))
        }
    }
    let config = r#"{
        "rules": [
            {"action": "drop", "source_labels": ["app"], "regex": "noise"},
            {"action": "to_metadata", "labels": ["pod"]},
            {"source_labels": ["namespace"], "regex": "team-(.*)", "target_label": "team"},
            {"action": "tenant", "source_labels": ["team"]},
            {"action": "to_label", "metadata": ["level"]},
            {"action": "drop", "source_labels": ["level"], "regex": "debug"},
            {"source_labels": ["metadata.pod", "level"], "target_label": "metadata.key"}
        ],
        "labels_to_keep": ["app", "team", "level", "namespace"]
    }"#;
    let mut batch = TestBatch::new().tenant("base");
    for (s, (app, ns)) in
        [("api", "team-a"), ("noise", "x"), ("web", "platform"), ("db", "team-b")].iter().enumerate()
    {
        let pod = format!("{app}-{s}");
        batch = batch.stream(&[("app", app), ("namespace", ns), ("pod", &pod), ("node", "n1")]);
        for (i, level) in ["info", "debug", "", "error"].iter().enumerate() {
            batch = batch.entry(i as i64, &format!("{app} {i}"), &[("level", level), ("trace_id", "t")]);
        }
    }
    let cached = run(config, &batch);
    let per_entry = testing::run(&mut testing::plugin::<PerEntry>(config), &batch);
    assert_eq!(cached.entries, per_entry.entries);
    assert_eq!(cached.lines().len(), 9, "{:#?}", cached.entries);
    assert_eq!(cached.count("dropped"), 7);
    assert_eq!(cached.count("tenant"), 6);

    // Without per-entry rules, outcomes come from the cache from the second batch on.
    let config = r#"{
        "rules": [
            {"action": "drop", "source_labels": ["app"], "regex": "noise"},
            {"action": "to_metadata", "labels": ["pod"]},
            {"source_labels": ["namespace"], "regex": "team-(.*)", "target_label": "team"},
            {"action": "tenant", "source_labels": ["team"]}
        ],
        "labels_to_keep": ["app", "team", "namespace"]
    }"#;
    let mut plugin = relabel(config);
    let per_entry = testing::run(&mut testing::plugin::<PerEntry>(config), &batch);
    for _ in 0..3 {
        assert_eq!(testing::run(&mut plugin, &batch).entries, per_entry.entries);
    }
    assert_eq!(plugin.plugin().cache.outcomes.len(), 4);
}

#[test]
fn cached_outcomes_are_per_tenant_and_label_set() {
    let config = r#"{"rules": [
        {"source_labels": ["__tenant_id__", "app"], "target_label": "key"},
        {"action": "to_metadata", "labels": ["pod"]}
    ]}"#;
    let mut plugin = relabel(config);
    let batch = |tenant| {
        TestBatch::new()
            .tenant(tenant)
            .stream(&[("app", "api"), ("pod", "p1")])
            .line("a")
            .stream(&[("app", "api"), ("pod", "p2")])
            .line("b")
    };
    for _ in 0..2 {
        for tenant in ["t1", "t2"] {
            let out = testing::run(&mut plugin, &batch(tenant));
            let key = format!("{tenant};api");
            assert_eq!(out.entries[0].labels, pairs(&[("app", "api"), ("key", &key)]));
            assert_eq!(out.entries[0].metadata, pairs(&[("pod", "p1")]));
            assert_eq!(out.entries[1].labels, pairs(&[("app", "api"), ("key", &key)]));
            assert_eq!(out.entries[1].metadata, pairs(&[("pod", "p2")]));
        }
    }
    assert_eq!(plugin.plugin().cache.outcomes.len(), 4);
}

#[test]
fn the_cache_starts_over_when_full() {
    let mut plugin = relabel(r#"{"rules": [{"source_labels": ["n"], "target_label": "copy"}]}"#);
    let mut batch = TestBatch::new();
    for i in 0..CACHE_STREAMS + 10 {
        batch = batch.stream(&[("n", &i.to_string())]).line("l");
    }
    for _ in 0..2 {
        let out = testing::run(&mut plugin, &batch);
        for (i, e) in out.entries.iter().enumerate() {
            assert_eq!(e.label("copy"), Some(i.to_string().as_str()));
        }
        assert!(plugin.plugin().cache.outcomes.len() <= CACHE_STREAMS);
    }
}

#[test]
fn counts_are_per_batch() {
    let mut plugin = relabel(r#"{"rules": [{"action": "drop", "source_labels": ["app"], "regex": "api"}]}"#);
    assert_eq!(testing::run(&mut plugin, &one_stream()).count("dropped"), 1);
    assert_eq!(testing::run(&mut plugin, &one_stream()).count("dropped"), 1);
}

#[test]
fn an_empty_batch_and_unicode_values() {
    let out = run(REFERENCE, &TestBatch::new());
    assert!(out.entries.is_empty());
    let batch = TestBatch::new().stream(&[("app", "日本語"), ("pod", "ポッド")]).line(&"x".repeat(100_000));
    let out = run(REFERENCE, &batch);
    assert_eq!(out.entries[0].labels, pairs(&[("app", "日本語")]));
    assert_eq!(out.entries[0].metadata, pairs(&[("pod", "ポッド")]));
}

// --- configuration errors ---

#[test]
fn rejects_configs_that_do_nothing() {
    assert_eq!(init_error("{}"), "nothing to do: set `rules`, `labels_to_keep` or both");
    assert_eq!(init_error(""), "nothing to do: set `rules`, `labels_to_keep` or both");
    assert_eq!(
        init_error(r#"{"rules": [], "labels_to_metadata": true}"#),
        "nothing to do: set `rules`, `labels_to_keep` or both"
    );
    assert_eq!(
        init_error(r#"{"rules": [{"action": "static", "labels": {"a": "b"}}], "labels_to_metadata": true}"#),
        "`labels_to_metadata` applies to the labels `labels_to_keep` leaves out: set `labels_to_keep`"
    );
}

#[test]
fn rejects_unknown_keys_and_actions() {
    assert_eq!(
        init_error(r#"{"rulez": []}"#),
        "invalid config at `rulez`: unknown field `rulez`, expected one of `rules`, `labels_to_keep`, `labels_to_metadata` at line 1 column 8"
    );
    assert_eq!(
        init_error(r#"{"rules": [{"action": "static", "labels": {"a": "b"}}, {"action": "hashmod"}]}"#),
        "invalid config at `rules[1].action`: unknown variant `hashmod`, expected one of `replace`, `keep`, `drop`, \
         `keepequal`, `dropequal`, `labelkeep`, `labeldrop`, `labelmap`, `lowercase`, `uppercase`, `to_metadata`, \
         `to_label`, `set`, `static`, `tenant` at line 1 column 75"
    );
    assert_eq!(
        init_error(r#"{"rules": [{"target": "x"}]}"#),
        "invalid config at `rules[0].target`: unknown field `target`, expected one of `action`, `source_labels`, \
         `separator`, `regex`, `target_label`, `replacement`, `labels`, `metadata` at line 1 column 20"
    );
}

#[test]
fn rejects_bad_regexes_with_the_rule_index() {
    assert_eq!(
        init_error(
            r#"{"rules": [{"action": "static", "labels": {"a": "b"}}, {"action": "labeldrop", "regex": "x"}, {"source_labels": ["a"], "regex": "(", "target_label": "b"}]}"#
        ),
        "`rules[2].regex`: `(` is not a valid regex: unclosed group"
    );
    assert_eq!(
        init_error(r#"{"rules": [{"action": "labelkeep", "regex": "[z-a]"}]}"#),
        "`rules[0].regex`: `[z-a]` is not a valid regex: invalid character class range, the start must be <= the end"
    );
    assert_eq!(
        init_error(r#"{"rules": [{"action": "to_metadata", "regex": "a)"}]}"#),
        "`rules[0].regex`: `a)` is not a valid regex: unopened group"
    );
}

#[test]
fn rejects_missing_and_misplaced_keys() {
    let cases = [
        (r#"{"source_labels": ["a"]}"#, "`rules[0].target_label`: required by action `replace`"),
        (r#"{"action": "keep"}"#, "`rules[0].source_labels`: required by action `keep`"),
        (r#"{"action": "drop", "regex": "x"}"#, "`rules[0].source_labels`: required by action `drop`"),
        (
            r#"{"action": "keepequal", "source_labels": ["a"]}"#,
            "`rules[0].target_label`: required by action `keepequal`",
        ),
        (
            r#"{"action": "lowercase", "target_label": "a"}"#,
            "`rules[0].source_labels`: required by action `lowercase`",
        ),
        (r#"{"action": "labeldrop"}"#, "`rules[0].regex`: required by action `labeldrop`"),
        (r#"{"action": "labelkeep"}"#, "`rules[0].regex`: required by action `labelkeep`"),
        (r#"{"action": "labelmap"}"#, "`rules[0].regex`: required by action `labelmap`"),
        (r#"{"action": "static"}"#, "`rules[0].labels`: required by action `static`"),
        (r#"{"action": "to_metadata"}"#, "`rules[0].labels`: action `to_metadata` needs `labels` or `regex`"),
        (r#"{"action": "to_label"}"#, "`rules[0].metadata`: action `to_label` needs `metadata` or `regex`"),
        (
            r#"{"action": "tenant"}"#,
            "`rules[0].replacement`: action `tenant` needs `source_labels` or `replacement`",
        ),
        (
            r#"{"action": "keep", "source_labels": ["a"], "target_label": "b"}"#,
            "`rules[0].target_label`: not used by action `keep`",
        ),
        (
            r#"{"action": "labeldrop", "regex": "a", "source_labels": ["b"]}"#,
            "`rules[0].source_labels`: not used by action `labeldrop`",
        ),
        (
            r#"{"action": "static", "labels": {"a": "b"}, "replacement": "c"}"#,
            "`rules[0].replacement`: not used by action `static`",
        ),
        (r#"{"action": "to_label", "labels": ["a"]}"#, "`rules[0].labels`: not used by action `to_label`"),
        (
            r#"{"action": "to_metadata", "metadata": ["a"]}"#,
            "`rules[0].metadata`: not used by action `to_metadata`",
        ),
        (
            r#"{"action": "tenant", "replacement": "t", "target_label": "x"}"#,
            "`rules[0].target_label`: not used by action `tenant`",
        ),
        (
            r#"{"action": "lowercase", "source_labels": ["a"], "target_label": "b", "regex": "c"}"#,
            "`rules[0].regex`: not used by action `lowercase`",
        ),
    ];
    for (rule, expected) in cases {
        assert_eq!(init_error(&format!(r#"{{"rules": [{rule}]}}"#)), expected, "{rule}");
    }
}

#[test]
fn rejects_invalid_names_and_values() {
    let name_rules =
        "is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, or `metadata.<name>` for structured metadata)";
    let cases = [
        (r#"{"source_labels": ["a"], "target_label": "bad-name"}"#, format!("`rules[0].target_label`: `bad-name` {name_rules}")),
        (r#"{"source_labels": ["a"], "target_label": "metadata.1x"}"#, format!("`rules[0].target_label`: `metadata.1x` {name_rules}")),
        (r#"{"source_labels": ["a"], "target_label": ""}"#, format!("`rules[0].target_label`: `` {name_rules}")),
        (r#"{"source_labels": ["a", "b.c"], "target_label": "x"}"#, format!("`rules[0].source_labels[1]`: `b.c` {name_rules}")),
        (r#"{"action": "to_metadata", "labels": ["ok", "not ok"]}"#, format!("`rules[0].labels[1]`: `not ok` {name_rules}")),
        (r#"{"action": "to_metadata", "labels": [3]}"#, "`rules[0].labels[0]`: expected a label name, not `3`".to_string()),
        (r#"{"action": "to_metadata", "labels": {"a": "b"}}"#, "`rules[0].labels`: action `to_metadata` takes a list of label names".to_string()),
        (r#"{"action": "to_label", "metadata": ["-"]}"#, format!("`rules[0].metadata[0]`: `-` {name_rules}")),
        (r#"{"action": "static", "labels": ["a"]}"#, "`rules[0].labels`: action `static` takes a map of label names to values".to_string()),
        (r#"{"action": "static", "labels": {}}"#, "`rules[0].labels`: set at least one label".to_string()),
        (r#"{"action": "static", "labels": {"a b": "c"}}"#, format!("`rules[0].labels`: `a b` {name_rules}")),
        (r#"{"action": "static", "labels": {"a": 1}}"#, "`rules[0].labels.a`: the value must be a string, not `1`".to_string()),
        (r#"{"action": "labelmap", "regex": "(.*)", "replacement": "x-y"}"#, format!("`rules[0].replacement`: `x-y` {name_rules}")),
        (
            r#"{"action": "tenant", "replacement": "a/b"}"#,
            "`rules[0].replacement`: `a/b` is not a valid tenant id: use 1 to 150 characters of a-z, A-Z, 0-9 and !-_.*'(), not `.` or `..`".to_string(),
        ),
        (
            r#"{"action": "tenant", "replacement": ".."}"#,
            "`rules[0].replacement`: `..` is not a valid tenant id: use 1 to 150 characters of a-z, A-Z, 0-9 and !-_.*'(), not `.` or `..`".to_string(),
        ),
    ];
    for (rule, expected) in cases {
        assert_eq!(init_error(&format!(r#"{{"rules": [{rule}]}}"#)), expected, "{rule}");
    }
    assert_eq!(
        init_error(r#"{"labels_to_keep": ["app", "bad.name"]}"#),
        "`labels_to_keep[1]`: `bad.name` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"
    );
}

#[test]
fn accepts_templates_it_can_only_check_per_match() {
    // A template target or tenant is checked per match, not at init.
    relabel(r#"{"rules": [{"source_labels": ["a"], "target_label": "x_$1"}]}"#);
    relabel(r#"{"rules": [{"action": "tenant", "source_labels": ["a"], "replacement": "t-$1"}]}"#);
    relabel(r#"{"rules": [{"action": "labelmap", "regex": "a_(.*)"}]}"#);
}
