//! The archive: compressed NDJSON objects in object storage (S3, GCS, Azure or a local
//! directory) that the [archive sink](crate::sink::archive) writes and `sluice replay` reads.
//!
//! [`record`] is the NDJSON format of one entry and [`parquet`] the Parquet one, [`key`] the
//! object keys, [`store`] opens a location.

pub mod key;
pub mod parquet;
pub mod record;
pub mod store;
