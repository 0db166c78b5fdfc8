//! Logging for `sluice plugin test`: what the plugin logs (the `log` import, and its captured
//! stdout and stderr, e.g. a panic message) at every level, as `[plugin NAME] LEVEL message` on
//! stderr; sluice's own messages only from `warn` up. `RUST_LOG` replaces the filter.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The target of plugin log events (see `plugin::host`).
const PLUGIN_TARGET: &str = "sluice::plugin";

/// Installs the subscriber (keeps one that exists already).
pub fn init() {
    let _ = match EnvFilter::try_from_default_env() {
        Ok(filter) => tracing_subscriber::registry().with(Lines.with_filter(filter)).try_init(),
        // Not an `EnvFilter` directive: that would match the host's modules under the same path.
        Err(_) => tracing_subscriber::registry().with(Lines.with_filter(filter_fn(shown))).try_init(),
    };
}

/// Everything a plugin logs; sluice's own messages from `warn` up.
fn shown(meta: &tracing::Metadata<'_>) -> bool {
    shown_at(meta.target(), *meta.level())
}

fn shown_at(target: &str, level: tracing::Level) -> bool {
    target == PLUGIN_TARGET || level <= tracing::Level::WARN
}

/// Formats each event as one line on stderr.
struct Lines;

impl<S: Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = format_line(meta.target(), *meta.level(), &fields);
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        match held.as_mut() {
            Some(lines) => lines.push(line),
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }
}

/// Lines held back while a plugin loads: loading runs `init` once to check the configuration,
/// and the instance that then runs calls `init` again, so what `init` logs would show twice.
static HELD: Mutex<Option<Vec<String>>> = Mutex::new(None);

/// Holds log lines back from now on.
pub fn hold() {
    *HELD.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
}

/// Stops holding lines back; writes the held ones if `show` (loading failed: they explain why).
pub fn release(show: bool) {
    let held = HELD.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
    if show {
        let mut err = std::io::stderr().lock();
        for line in held {
            let _ = writeln!(err, "{line}");
        }
    }
}

fn format_line(target: &str, level: tracing::Level, fields: &Fields) -> String {
    if target == PLUGIN_TARGET {
        let plugin = fields.plugin.as_deref().unwrap_or("?");
        format!("[plugin {plugin}] {level} {}", fields.message)
    } else {
        let mut line = format!("{} {}", level.as_str().to_lowercase(), fields.message);
        for (name, value) in &fields.other {
            let _ = write!(line, " {name}={value}");
        }
        line
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    plugin: Option<String>,
    other: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "plugin" => self.plugin = Some(value.to_string()),
            name => self.other.push((name, value.to_string())),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "plugin" => self.plugin = Some(format!("{value:?}")),
            name => self.other.push((name, format!("{value:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_messages_at_every_level_and_sluice_s_from_warn() {
        use tracing::Level;
        assert!(shown_at(PLUGIN_TARGET, Level::TRACE));
        assert!(!shown_at("sluice::plugin::build", Level::INFO), "not the host's own modules");
        assert!(shown_at("sluice::plugin::build", Level::WARN));
        assert!(shown_at("sluice::config", Level::ERROR));
    }

    #[test]
    fn plugin_lines_name_the_plugin_and_others_keep_their_fields() {
        let fields = Fields {
            message: "redacted 1 entries".into(),
            plugin: Some("example-filter".into()),
            other: vec![("stage", "plugin-test/f".into())],
        };
        assert_eq!(
            format_line(PLUGIN_TARGET, tracing::Level::DEBUG, &fields),
            "[plugin example-filter] DEBUG redacted 1 entries"
        );
        assert_eq!(
            format_line("sluice::plugin::cache", tracing::Level::WARN, &fields),
            "warn redacted 1 entries stage=plugin-test/f"
        );
    }
}
