//! Accepts its config only with `"ok": true`: the test of a plugin rejecting its configuration.

use serde::Deserialize;
use sluice_sdk::prelude::*;

/// The configuration: `{"ok": true}` or it is rejected.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    ok: bool,
}

/// The reject-config plugin; once accepted, it keeps everything.
pub struct RejectConfig;

impl Plugin for RejectConfig {
    type Config = Config;

    fn init(config: Config) -> Result<Self, Error> {
        if !config.ok {
            bail!("reject-config refuses this configuration: set \"ok\": true to accept it");
        }
        Ok(Self)
    }

    fn process(&mut self, _entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        Ok(Verdict::Keep)
    }
}

sluice_sdk::export!(RejectConfig);

#[cfg(test)]
mod tests {
    use sluice_sdk::testing;

    use super::*;

    #[test]
    fn rejects_unless_ok() {
        assert!(testing::init_error::<RejectConfig>("{}").contains("set \"ok\": true"));
        assert!(testing::init_error::<RejectConfig>(r#"{"ok": false}"#).contains("refuses"));
        assert!(testing::init_error::<RejectConfig>(r#"{"ok": 1}"#).contains("at `ok`"));
        testing::plugin::<RejectConfig>(r#"{"ok": true}"#);
    }
}
