//! The command line: `sluice run`, `sluice validate`, `sluice replay` (in [`crate::replay`]),
//! and `sluice plugin test|new` for plugin authors (their logic lives in
//! [`crate::plugin::tryout`] and [`crate::plugin::scaffold`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigErrors, Overrides};
use crate::telemetry::{self, LogFormat};

/// A gateway in front of Grafana Loki that runs plugins on every pushed batch.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service. Without --config: the embedded default (listen on 127.0.0.1:3100, write
    /// every accepted line as NDJSON under <data-dir>/archive, forward to --loki-url if given).
    Run(RunArgs),
    /// Check a configuration file and report every problem with its location.
    Validate(ValidateArgs),
    /// Push archived logs (sluice's archive, or a logcli JSONL export) into Loki, in time order
    /// per stream, resuming where an interrupted run stopped.
    Replay(ReplayArgs),
    /// Write and try out plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run a plugin over a file of log lines, as a pipeline stage would, and show what comes out
    /// and what was dropped.
    Test(PluginTestArgs),
    /// Write a new plugin crate from the SDK's template.
    New(PluginNewArgs),
}

#[derive(Debug, Args)]
pub struct PluginTestArgs {
    /// The plugin's .wasm (built with `cargo build --release --target wasm32-wasip2`), or a
    /// built-in's name (`redact`), to try a built-in on your own lines.
    pub plugin: PathBuf,
    /// The stage's `config`, as JSON or YAML (default `{}`).
    #[arg(long, conflicts_with = "config_file")]
    pub config: Option<String>,
    /// A file holding the stage's `config`, JSON or YAML.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// The input: a Loki JSON push body, or NDJSON lines (archive records or plain text);
    /// `-` reads stdin.
    #[arg(long)]
    pub input: PathBuf,
    /// The tenant the batches belong to.
    #[arg(long, default_value = "fake")]
    pub tenant: String,
    /// The stage's `hash_key` (default: sluice's public default key, as for a stage without one).
    #[arg(long)]
    pub hash_key: Option<String>,
    /// `text`: one line per entry and a summary; `ndjson`: the output entries as archive
    /// records on stdout, the summary on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub format: crate::plugin::tryout::OutputFormat,
    /// Most entries per `process` call.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// The stage's `timeout` per call (default as in a stage: 1s), e.g. `300ms`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// The stage's `max_memory` (default as in a stage: 64MiB), e.g. `16MiB`.
    #[arg(long)]
    pub max_memory: Option<bytesize::ByteSize>,
}

#[derive(Debug, Args)]
pub struct PluginNewArgs {
    /// The crate's name, e.g. `redact-emails`.
    pub name: String,
    /// The directory to create the crate in (as `<dir>/<name>`).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Path of sluice's `sdk/` for the `sluice-sdk` dependency (default: the SDK this sluice was
    /// built from, if it is still there).
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// YAML configuration file; `${VAR}` and `${VAR:-default}` are substituted from the environment.
    #[arg(long, short, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides server.listen).
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Loki to forward to: sets the url of every `loki` sink, or adds one to the embedded default.
    #[arg(long, env = "SLUICE_LOKI_URL")]
    pub loki_url: Option<String>,
    /// Directory for sluice's state (overrides data_dir).
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// What to replay: an archive (`s3://bucket/prefix`, `gs://…`, `az://…`, `file:///dir`, a
    /// directory, or a sluice data directory), or one file (`.jsonl`, `.ndjson`, optionally
    /// `.gz`/`.zst`, or `.parquet`), e.g. a `logcli query --output=jsonl` export.
    #[arg(long, value_name = "URL|DIR|FILE")]
    pub from: String,
    /// Loki's base URL (`http://loki:3100`) or full push URL.
    #[arg(long, value_name = "URL")]
    pub to_loki: String,
    /// Replay entries from this time on (inclusive): RFC 3339 with any offset, a date
    /// (`2024-03-01`, UTC midnight), or a duration before now (`24h`).
    #[arg(long, value_name = "TIME", value_parser = crate::replay::time::parse)]
    pub since: Option<crate::replay::time::TimeArg>,
    /// Replay entries before this time (exclusive); same forms as --since.
    #[arg(long, value_name = "TIME", value_parser = crate::replay::time::parse)]
    pub until: Option<crate::replay::time::TimeArg>,
    /// Only streams matching this Loki stream selector (on the archived labels), e.g.
    /// `{app="api", env=~"prod|staging"}`.
    #[arg(long, value_parser = check_selector_arg)]
    pub selector: Option<String>,
    /// Push everything under this tenant instead of the archived one (records without one go
    /// to `fake`, Loki's tenant without authentication).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Most bytes (lines and structured metadata) per push request.
    #[arg(long, default_value = "1MiB")]
    pub batch_size: bytesize::ByteSize,
    /// Attempts per push request on 429, 5xx and network errors before the replay stops
    /// (resumable); 0 retries forever.
    #[arg(long, default_value_t = 10)]
    pub max_attempts: u32,
    /// The checkpoint file (default: `.sluice-replay-<hash of the arguments>.json` in the
    /// current directory).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Ignore the checkpoint and replay everything again.
    #[arg(long)]
    pub restart: bool,
    /// An S3-compatible endpoint (default: AWS_ENDPOINT_URL, else AWS). Credentials come from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and the usual AWS_* variables).
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The S3 region (default: AWS_REGION).
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// A setting of the store by its `object_store` key, e.g. `google_service_account=/key.json`;
    /// repeatable.
    #[arg(long = "store-option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub store_options: Vec<(String, String)>,
    /// Basic-auth user name for Loki.
    #[arg(long, env = "SLUICE_LOKI_USERNAME")]
    pub loki_username: Option<String>,
    /// Basic-auth password for Loki.
    #[arg(long, env = "SLUICE_LOKI_PASSWORD", hide_env_values = true, requires = "loki_username")]
    pub loki_password: Option<String>,
    /// Bearer token for Loki.
    #[arg(long, env = "SLUICE_LOKI_BEARER_TOKEN", hide_env_values = true, conflicts_with = "loki_username")]
    pub loki_bearer_token: Option<String>,
}

fn check_selector_arg(s: &str) -> Result<String, String> {
    check_selector(s).map(|()| s.to_string())
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}`: expected KEY=VALUE")),
    }
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The configuration file to check.
    #[arg(long, short)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Format of sluice's own logs on stderr.
    #[arg(long, value_enum, default_value = "text", env = "SLUICE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log level or filter (RUST_LOG takes precedence), e.g. `info` or `sluice=debug`.
    #[arg(long, default_value = "info", env = "SLUICE_LOG_LEVEL")]
    pub log_level: String,
}

/// Runs the parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(args) => run(args),
        Command::Validate(args) => validate(&args),
        Command::Replay(args) => crate::replay::main(args),
        Command::Plugin(PluginCommand::Test(args)) => plugin_test(args),
        Command::Plugin(PluginCommand::New(args)) => plugin_new(&args),
    }
}

fn plugin_test(args: PluginTestArgs) -> ExitCode {
    use crate::plugin::tryout;
    tryout::logs::init();
    let result =
        tryout::parse_config(args.config.as_deref(), args.config_file.as_deref()).and_then(|config| {
            let options = tryout::Options {
                plugin: args.plugin,
                config,
                input: args.input,
                tenant: args.tenant,
                hash_key: args.hash_key,
                format: args.format,
                batch_size: args.batch_size as usize,
                timeout: args.timeout,
                max_memory: args.max_memory,
            };
            tryout::run(&options, &mut std::io::stdout().lock(), &mut std::io::stderr())
        });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn plugin_new(args: &PluginNewArgs) -> ExitCode {
    use crate::plugin::scaffold;
    match scaffold::create(&args.name, &args.dir, args.sdk.as_deref()) {
        Ok(created) => {
            print!("{}", scaffold::next_steps(&created));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    telemetry::init_logging(args.log.log_format, &args.log.log_level);
    let config = match load(&args) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("sluice-io").build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    // Reloads (SIGHUP, `POST /-/reload`, a changed file) read the same sources again.
    let reload: crate::app::Reloader = std::sync::Arc::new(move || load(&args));
    match runtime.block_on(crate::app::run(config, reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration `run` would use: file or embedded default, overrides applied, validated.
fn load(args: &RunArgs) -> Result<Config, ConfigErrors> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    let overrides = Overrides {
        listen: args.listen,
        loki_url: args.loki_url.clone(),
        data_dir: args.data_dir.clone(),
        from_file: args.config.is_some(),
    };
    config.apply_overrides(&overrides)?;
    config.validate(check_selector)?;
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    Ok(config)
}

fn validate(args: &ValidateArgs) -> ExitCode {
    let result = Config::load(&args.config).and_then(|c| {
        // Plugins are loaded and their `init` run on their configuration, so a plugin that
        // rejects it is reported here rather than at deployment. Nothing is cached: validate
        // leaves no files behind.
        let mut errors = c.validate(check_selector).err().map(|e| e.0).unwrap_or_default();
        if let Err(e) = crate::plugin::check_config(&c) {
            errors.extend(e.0);
        }
        // The TLS files as `run` reads them (the deployment's paths must exist here too).
        if let Some(Err(e)) = c.server.tls.as_ref().map(crate::ingest::tls::load) {
            errors.push(crate::config::ConfigError { location: "server.tls".into(), message: e.to_string() });
        }
        if errors.is_empty() { Ok(c) } else { Err(ConfigErrors(errors)) }
    });
    match result {
        Ok(c) => {
            for w in c.warnings() {
                eprintln!("{}: warning: {w}", args.config.display());
            }
            let stages: usize = c.pipelines.values().map(|p| p.stages.len()).sum();
            println!(
                "{}: valid ({} sink{}, {} route{}, {} plugin stage{})",
                args.config.display(),
                c.sinks.len(),
                if c.sinks.len() == 1 { "" } else { "s" },
                c.routes.len(),
                if c.routes.len() == 1 { "" } else { "s" },
                stages,
                if stages == 1 { "" } else { "s" },
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprint!("{}: {errors}", args.config.display());
            ExitCode::FAILURE
        }
    }
}

fn check_selector(s: &str) -> Result<(), String> {
    crate::route::Selector::parse(s).map(drop).map_err(|e| e.to_string())
}
