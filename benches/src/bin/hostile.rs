//! What hostile clients and plugins cost the real sluice binary (issue 15): one scenario at a
//! time against a fresh sluice, each measured from outside (peak RSS from `/proc`, `/ready`
//! latency from a probe, the answers clients get).
//!
//! `cargo build --release -p sluice -p sluice-benches && target/release/hostile`
//! (`--sluice PATH` measures another build, e.g. an older one; the test plugins come from
//! `target/test-plugins`, which `cargo test` builds).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use sluice_benches::procfs::peak_rss_bytes;
use sluice_benches::receiver::Receiver;
use sluice_benches::server::{SluiceProcess, sluice_binary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser, Debug)]
struct Args {
    /// The sluice binary. Default: `sluice` beside this program.
    #[arg(long)]
    sluice: Option<PathBuf>,
    /// Where the test plugins (sleeper, amplify) are.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-plugins/wasm32-wasip2/release"))]
    plugins: PathBuf,
    /// Empty entries in the hostile push.
    #[arg(long, default_value_t = 20_000_000)]
    empty_entries: usize,
    /// Slow clients held open at once.
    #[arg(long, default_value_t = 200)]
    slow_clients: usize,
    /// How long the slow clients trickle.
    #[arg(long, default_value = "65s", value_parser = humantime::parse_duration)]
    slow_for: Duration,
    /// Scenarios to run.
    #[arg(long, value_delimiter = ',', default_value = "push,slow,large,amplify,sleep")]
    scenarios: Vec<String>,
}

fn loki_config(loki: &str, extra: &str) -> String {
    format!(
        "sinks:\n  loki: {{ type: loki, url: \"{loki}\", batch_wait: 200ms }}\n{extra}default_route: {{ sinks: [loki]{} }}\n",
        if extra.contains("pipelines") { ", pipeline: p" } else { "" }
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

/// `/ready` latencies measured every 50 ms until `stop`.
async fn probe_ready(url: String, stop: tokio::sync::watch::Receiver<bool>) -> Vec<Duration> {
    let client =
        reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("client");
    let mut out = Vec::new();
    while !*stop.borrow() {
        let started = Instant::now();
        let _ = client.get(&url).send().await;
        out.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out
}

fn summary(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "no probe".into();
    }
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} probes)",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
        v.len()
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = sluice_binary(args.sluice.as_deref())?;
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build()?;
    let loki = Receiver::start(&[]).context("receiver")?;
    println!("sluice: {}\n", bin.display());
    for scenario in &args.scenarios {
        let row = match scenario.as_str() {
            "push" => hostile_push(&bin, &loki, &client, args.empty_entries).await?,
            "slow" => slow_clients(&bin, &loki, &client, args.slow_clients, args.slow_for).await?,
            "large" => large_pushes(&bin, &loki, &client).await?,
            "amplify" => amplify(&bin, &loki, &client, &args.plugins).await?,
            "sleep" => sleeper(&bin, &loki, &client, &args.plugins).await?,
            other => anyhow::bail!("unknown scenario `{other}`"),
        };
        println!("| {scenario} | {row} |");
    }
    Ok(())
}

/// One push of `n` empty protobuf entries (2 bytes each on the wire).
async fn hostile_push(
    bin: &std::path::Path,
    loki: &Receiver,
    client: &reqwest::Client,
    n: usize,
) -> anyhow::Result<String> {
    let s = SluiceProcess::start(bin, &loki_config(&loki.url(), ""), client).await?;
    let mut stream = vec![0x0a, 7];
    stream.extend_from_slice(br#"{a="1"}"#);
    for _ in 0..n {
        stream.extend_from_slice(&[0x12, 0x00]);
    }
    let mut raw = vec![0x0a];
    prost::encoding::encode_varint(stream.len() as u64, &mut raw);
    raw.extend_from_slice(&stream);
    let body = snap::raw::Encoder::new().compress_vec(&raw)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let probe = tokio::spawn(probe_ready(s.url("/ready"), stop_rx));
    let started = Instant::now();
    let resp = client
        .post(s.url("/loki/api/v1/push"))
        .header("Content-Type", "application/x-protobuf")
        .body(body.clone())
        .send()
        .await;
    let took = started.elapsed();
    let _ = stop_tx.send(true);
    let ready = probe.await?;
    let answer = match resp {
        Ok(r) => format!(
            "{} ({})",
            r.status().as_u16(),
            r.text().await.unwrap_or_default().trim().chars().take(90).collect::<String>()
        ),
        Err(e) => format!("error: {e}"),
    };
    let rss = peak_rss_bytes(&s.pid().to_string()).unwrap_or(0);
    Ok(format!(
        "{n} empty entries: {} body, {} decompressed | answer {answer} in {:.2} s | peak RSS {} | /ready {}",
        mib(body.len() as u64),
        mib(raw.len() as u64),
        took.as_secs_f64(),
        mib(rss),
        summary(ready)
    ))
}

/// Half the clients trickle their headers, half their bodies, a byte a second.
async fn slow_clients(
    bin: &std::path::Path,
    loki: &Receiver,
    client: &reqwest::Client,
    n: usize,
    hold: Duration,
) -> anyhow::Result<String> {
    let s = SluiceProcess::start(bin, &loki_config(&loki.url(), ""), client).await?;
    let addr = s.url("").trim_start_matches("http://").to_string();
    let mut tasks = Vec::new();
    for i in 0..n {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut c) = tokio::net::TcpStream::connect(&addr).await else { return (false, Duration::ZERO) };
            let head = "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 33554432\r\n";
            let started = Instant::now();
            if i % 2 == 1 {
                // Whole headers, then the body a byte a second.
                if c.write_all(format!("{head}\r\n").as_bytes()).await.is_err() {
                    return (false, started.elapsed());
                }
            }
            let mut buf = [0u8; 512];
            while started.elapsed() < hold {
                if c.write_all(b"x").await.is_err() {
                    return (false, started.elapsed());
                }
                match tokio::time::timeout(Duration::from_secs(1), c.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return (false, started.elapsed()),
                    _ => {}
                }
            }
            (true, started.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let probe = tokio::spawn(probe_ready(s.url("/ready"), stop_rx));
    let mut still_open = 0;
    let mut cut = Vec::new();
    for t in tasks {
        let (open, after) = t.await?;
        if open { still_open += 1 } else { cut.push(after) }
    }
    let _ = stop_tx.send(true);
    let ready = probe.await?;
    cut.sort();
    let median_cut = cut.get(cut.len() / 2).map_or("-".to_string(), |d| format!("{:.0} s", d.as_secs_f64()));
    let rss = peak_rss_bytes(&s.pid().to_string()).unwrap_or(0);
    Ok(format!(
        "{n} clients trickling headers or bodies at 1 byte/s for {} s | still open at the end: {still_open}, closed by sluice: {} (median after {median_cut}) | peak RSS {} | /ready {}",
        hold.as_secs(),
        cut.len(),
        mib(rss),
        summary(ready)
    ))
}

/// 4 clients pushing 20 MB JSON bodies for 10 s while `/ready` is probed.
async fn large_pushes(
    bin: &std::path::Path,
    loki: &Receiver,
    client: &reqwest::Client,
) -> anyhow::Result<String> {
    let s = SluiceProcess::start(
        bin,
        &loki_config(&loki.url(), "queue: { max_entries: 2000000, max_bytes: 1GiB }\n"),
        client,
    )
    .await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as i64;
    let values: Vec<String> =
        (0..90_000).map(|i| format!(r#"["{}","{} {}"]"#, now + i, i, "y".repeat(200))).collect();
    let body = format!(r#"{{"streams":[{{"stream":{{"app":"big"}},"values":[{}]}}]}}"#, values.join(","));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let probe = tokio::spawn(probe_ready(s.url("/ready"), stop_rx));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pushers = Vec::new();
    for _ in 0..4 {
        let (client, url, body) = (client.clone(), s.url("/loki/api/v1/push"), body.clone());
        pushers.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                let r = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().as_u16() == 204) {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut accepted = 0;
    for p in pushers {
        accepted += p.await?;
    }
    let _ = stop_tx.send(true);
    let ready = probe.await?;
    Ok(format!(
        "4 clients pushing {} JSON bodies (90,000 entries) for 10 s: {accepted} accepted | /ready {}",
        mib(body.len() as u64),
        summary(ready)
    ))
}

/// A plugin whose response points 1,000 added entries at one 1 MiB line.
async fn amplify(
    bin: &std::path::Path,
    loki: &Receiver,
    client: &reqwest::Client,
    plugins: &std::path::Path,
) -> anyhow::Result<String> {
    let plugin = plugins.join("amplify.wasm");
    let extra = format!(
        "pipelines:\n  p:\n    stages:\n      - plugin: \"{}\"\n        config: {{ copies: 1000, line_bytes: 1048576 }}\n        on_error: drop\n",
        plugin.display()
    );
    let s = SluiceProcess::start(bin, &loki_config(&loki.url(), &extra), client).await?;
    let before = peak_rss_bytes(&s.pid().to_string()).unwrap_or(0);
    let started = Instant::now();
    let resp = push_line(client, &s, "please amplify").await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = peak_rss_bytes(&s.pid().to_string()).unwrap_or(0);
    Ok(format!(
        "1,000 added entries → one 1 MiB line | answer {resp} in {:.2} s | peak RSS {} before, {} after",
        took.as_secs_f64(),
        mib(before),
        mib(rss)
    ))
}

/// A plugin that sleeps an hour in `process`, and one that sleeps in `init`.
async fn sleeper(
    bin: &std::path::Path,
    loki: &Receiver,
    client: &reqwest::Client,
    plugins: &std::path::Path,
) -> anyhow::Result<String> {
    let plugin = plugins.join("sleeper.wasm");
    let stage = |config: &str| {
        format!(
            "pipelines:\n  p:\n    stages:\n      - plugin: \"{}\"\n        config: {config}\n        on_error: drop\n",
            plugin.display()
        )
    };
    let s = SluiceProcess::start(bin, &loki_config(&loki.url(), &stage("{}")), client).await?;
    let started = Instant::now();
    let first = push_line(client, &s, "please sleep").await;
    let first_took = started.elapsed();
    let started = Instant::now();
    let second = push_line(client, &s, "an ordinary line after it").await;
    let second_took = started.elapsed();
    drop(s);
    let started = Instant::now();
    let init =
        match SluiceProcess::start(bin, &loki_config(&loki.url(), &stage("{ sleep_in_init: true }")), client)
            .await
        {
            Ok(_) => "started".to_string(),
            Err(e) => {
                let text = format!("{e:#}");
                let line = text.lines().find(|l| l.contains("may not block")).or_else(|| text.lines().next());
                let line = line.unwrap_or("failed");
                line.chars().skip(line.len().saturating_sub(160)).collect::<String>()
            }
        };
    Ok(format!(
        "sleep in process: {first} in {:.2} s, the next push {second} in {:.2} s | sleep in init: {init} after {:.1} s",
        first_took.as_secs_f64(),
        second_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ))
}

async fn push_line(client: &reqwest::Client, s: &SluiceProcess, line: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let body = format!(r#"{{"streams":[{{"stream":{{"app":"hostile"}},"values":[["{now}","{line}"]]}}]}}"#);
    match client
        .post(s.url("/loki/api/v1/push"))
        .header("Content-Type", "application/json")
        .timeout(Duration::from_secs(15))
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) if e.is_timeout() => "no answer (15 s timeout)".to_string(),
        Err(e) => format!("error: {e}"),
    }
}
