//! Keeps every entry and changes nothing: what the plugin boundary costs by itself.

use sluice_sdk::prelude::*;

/// The identity plugin.
pub struct Identity;

impl Plugin for Identity {
    type Config = ();

    fn init((): ()) -> Result<Self, Error> {
        Ok(Self)
    }

    fn process(&mut self, _entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        Ok(Verdict::Keep)
    }
}

sluice_sdk::export!(Identity);

#[cfg(test)]
mod tests {
    use sluice_sdk::testing::{self, Status, TestBatch};

    use super::*;

    #[test]
    fn keeps_everything_unchanged() {
        let mut plugin = testing::plugin::<Identity>("{}");
        let batch = TestBatch::new().stream(&[("app", "a")]).line("one").line("two");
        let out = testing::run(&mut plugin, &batch);
        assert_eq!(out.lines(), ["one", "two"]);
        assert!(out.entries.iter().all(|e| e.status == Status::Kept));
    }
}
