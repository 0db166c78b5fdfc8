//! The command line: `sluice run` and `sluice validate`.

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
    match runtime.block_on(crate::app::run(config)) {
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
        if errors.is_empty() { Ok(c) } else { Err(ConfigErrors(errors)) }
    });
    match result {
        Ok(c) => {
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
