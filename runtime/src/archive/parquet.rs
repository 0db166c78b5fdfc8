//! The archive's second format: Parquet, one row per entry, with the same fields as the NDJSON
//! record (a contract like it; see the README):
//!
//! ```text
//! message sluice_log {
//!   required binary tenant (STRING);
//!   required int64 ts (TIMESTAMP(NANOS,true));
//!   required group labels (MAP) { repeated group key_value {
//!     required binary key (STRING); required binary value (STRING); } }
//!   required group structured_metadata (MAP) { repeated group key_value {
//!     required binary key (STRING); required binary value (STRING); } }
//!   required binary line (STRING);
//! }
//! ```
//!
//! Rows are buffered and written as a row group every [`ROW_GROUP_BYTES`] of data, so an open
//! Parquet object holds up to that much in memory; the footer is written when it is sealed (a
//! Parquet file interrupted by a crash cannot be salvaged, unlike NDJSON).

use std::io::{self, Write};
use std::sync::Arc;

use parquet::basic::{Compression as Codec, GzipLevel, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::config::Compression;
use crate::model::{Entry, LabelSet, Pair};

/// The schema, in Parquet's message syntax.
pub const SCHEMA: &str = "message sluice_log {
  required binary tenant (STRING);
  required int64 ts (TIMESTAMP(NANOS,true));
  required group labels (MAP) {
    repeated group key_value {
      required binary key (STRING);
      required binary value (STRING);
    }
  }
  required group structured_metadata (MAP) {
    repeated group key_value {
      required binary key (STRING);
      required binary value (STRING);
    }
  }
  required binary line (STRING);
}";

/// Data buffered before a row group is written.
pub const ROW_GROUP_BYTES: usize = 8 << 20;

/// A map column: keys and values of every row, with Dremel levels (definition 1 = a pair,
/// 0 = an empty map; repetition 0 = first pair of a row).
#[derive(Default)]
struct MapColumn {
    keys: Vec<ByteArray>,
    values: Vec<ByteArray>,
    definition: Vec<i16>,
    repetition: Vec<i16>,
}

impl MapColumn {
    fn push<'a>(&mut self, pairs: impl Iterator<Item = &'a Pair>) -> usize {
        let mut bytes = 0;
        let mut first = true;
        for (k, v) in pairs {
            self.keys.push(ByteArray::from(k.as_str()));
            self.values.push(ByteArray::from(v.as_str()));
            self.definition.push(1);
            self.repetition.push(if first { 0 } else { 1 });
            bytes += k.len() + v.len();
            first = false;
        }
        if first {
            self.definition.push(0);
            self.repetition.push(0);
        }
        bytes
    }
}

#[derive(Default)]
struct Rows {
    tenant: Vec<ByteArray>,
    ts: Vec<i64>,
    labels: MapColumn,
    metadata: MapColumn,
    line: Vec<ByteArray>,
    bytes: usize,
}

/// A Parquet object being written to `W`.
pub struct ParquetWriter<W: Write + Send> {
    writer: SerializedFileWriter<W>,
    rows: Rows,
}

fn to_io(e: parquet::errors::ParquetError) -> io::Error {
    io::Error::other(e.to_string())
}

impl<W: Write + Send> ParquetWriter<W> {
    pub fn new(out: W, compression: Compression, level: Option<i32>) -> io::Result<Self> {
        let codec = match compression {
            Compression::Zstd => Codec::ZSTD(ZstdLevel::try_new(level.unwrap_or(3)).map_err(to_io)?),
            Compression::Gzip => Codec::GZIP(GzipLevel::try_new(level.unwrap_or(6) as u32).map_err(to_io)?),
            Compression::None => Codec::UNCOMPRESSED,
        };
        let schema = Arc::new(parse_message_type(SCHEMA).map_err(to_io)?);
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(codec)
                .set_created_by(concat!("sluice ", env!("CARGO_PKG_VERSION")).to_string())
                .build(),
        );
        let writer = SerializedFileWriter::new(out, schema, props).map_err(to_io)?;
        Ok(Self { writer, rows: Rows::default() })
    }

    /// Adds one row; writes a row group when enough is buffered.
    pub fn push(&mut self, tenant: &str, labels: &LabelSet, entry: &Entry) -> io::Result<()> {
        let rows = &mut self.rows;
        rows.tenant.push(ByteArray::from(tenant));
        rows.ts.push(entry.timestamp_ns);
        rows.bytes += tenant.len() + 8 + entry.line.len();
        rows.bytes += rows.labels.push(labels.pairs().iter());
        let metadata = crate::archive::record::sorted_metadata(&entry.metadata);
        rows.bytes += rows.metadata.push(metadata.into_iter());
        rows.line.push(ByteArray::from(entry.line.as_str()));
        if rows.bytes >= ROW_GROUP_BYTES {
            self.flush_row_group()?;
        }
        Ok(())
    }

    /// Bytes written to `W` so far (the buffered rows are not in it yet).
    pub fn inner(&self) -> &W {
        self.writer.inner()
    }

    fn flush_row_group(&mut self) -> io::Result<()> {
        let rows = std::mem::take(&mut self.rows);
        if rows.ts.is_empty() {
            return Ok(());
        }
        let mut group = self.writer.next_row_group().map_err(to_io)?;
        // Leaf columns in schema order: tenant, ts, labels.key, labels.value,
        // structured_metadata.key, structured_metadata.value, line.
        let mut column = 0;
        while let Some(mut writer) = group.next_column().map_err(to_io)? {
            let written = match column {
                0 => writer.typed::<ByteArrayType>().write_batch(&rows.tenant, None, None),
                1 => writer.typed::<Int64Type>().write_batch(&rows.ts, None, None),
                2..=5 => {
                    let map = if column < 4 { &rows.labels } else { &rows.metadata };
                    let values = if column % 2 == 0 { &map.keys } else { &map.values };
                    writer.typed::<ByteArrayType>().write_batch(
                        values,
                        Some(&map.definition),
                        Some(&map.repetition),
                    )
                }
                _ => writer.typed::<ByteArrayType>().write_batch(&rows.line, None, None),
            };
            written.map_err(to_io)?;
            writer.close().map_err(to_io)?;
            column += 1;
        }
        group.close().map_err(to_io)?;
        Ok(())
    }

    /// Writes the last row group and the footer; returns `W`.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_row_group()?;
        self.writer.into_inner().map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    #[test]
    fn rows_read_back_with_maps_empty_and_full() {
        let labels = LabelSet::new(vec![("app".into(), "api".into()), ("env".into(), "prod".into())]);
        let entries = [
            Entry { timestamp_ns: 1_709_251_199_123_456_789, line: "one".into(), metadata: vec![] },
            Entry {
                timestamp_ns: 2,
                line: "two".into(),
                metadata: vec![("trace_id".into(), "t1".into()), ("a".into(), "1".into())],
            },
        ];
        let mut w = ParquetWriter::new(Vec::new(), Compression::Zstd, None).expect("writer");
        for e in &entries {
            w.push("team-a", &labels, e).expect("push");
        }
        let bytes = w.finish().expect("finish");
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("a Parquet file");
        let rows: Vec<_> = reader.get_row_iter(None).expect("rows").map(|r| r.expect("row")).collect();
        assert_eq!(rows.len(), 2);
        let fields: Vec<(String, Field)> =
            rows[1].get_column_iter().map(|(n, f)| (n.clone(), f.clone())).collect();
        assert_eq!(fields[0], ("tenant".into(), Field::Str("team-a".into())));
        assert_eq!(fields[1].1, Field::Long(2), "nanoseconds (the row API has no nanosecond timestamp)");
        let map = |f: &Field| match f {
            Field::MapInternal(m) => m.entries().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            other => panic!("not a map: {other:?}"),
        };
        assert_eq!(map(&fields[2].1), ["\"app\"=\"api\"", "\"env\"=\"prod\""]);
        assert_eq!(map(&fields[3].1), ["\"a\"=\"1\"", "\"trace_id\"=\"t1\""]);
        assert_eq!(fields[4], ("line".into(), Field::Str("two".into())));
        let first: Vec<Field> = rows[0].get_column_iter().map(|(_, f)| f.clone()).collect();
        assert!(map(&first[3]).is_empty(), "no metadata is an empty map");
    }
}
