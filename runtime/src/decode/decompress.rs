//! Content-Encoding (gzip, deflate) and the raw snappy block that wraps protobuf bodies, each
//! bounded by the decompressed-size limit without trusting sizes the client declares.

use std::borrow::Cow;
use std::io::Read;

use super::DecodeError;

/// A body's `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Absent, or `snappy` (which Loki treats as "the body is as sent").
    Identity,
    Gzip,
    /// Go's `compress/flate` reader, i.e. raw deflate; zlib-wrapped bodies are accepted too.
    Deflate,
}

impl Encoding {
    /// From the header value; unknown codings are an error, as in Loki.
    pub(crate) fn parse(header: Option<&str>) -> Result<Self, DecodeError> {
        let Some(value) = header.map(str::trim) else { return Ok(Self::Identity) };
        if value.is_empty() || value.eq_ignore_ascii_case("snappy") {
            Ok(Self::Identity)
        } else if value.eq_ignore_ascii_case("gzip") {
            Ok(Self::Gzip)
        } else if value.eq_ignore_ascii_case("deflate") {
            Ok(Self::Deflate)
        } else {
            Err(DecodeError::UnsupportedEncoding(value.chars().take(64).collect()))
        }
    }
}

/// Removes the content encoding; the result is at most `limit` bytes.
pub(crate) fn content_decode(
    body: &[u8],
    encoding: Encoding,
    limit: usize,
) -> Result<Cow<'_, [u8]>, DecodeError> {
    match encoding {
        Encoding::Identity if body.len() > limit => Err(DecodeError::TooLarge { limit }),
        Encoding::Identity => Ok(Cow::Borrowed(body)),
        Encoding::Gzip => {
            read_bounded(flate2::read::GzDecoder::new(body), body.len(), limit, "gzip").map(Cow::Owned)
        }
        Encoding::Deflate => {
            if looks_like_zlib(body) {
                match read_bounded(flate2::read::ZlibDecoder::new(body), body.len(), limit, "deflate") {
                    Ok(out) => return Ok(Cow::Owned(out)),
                    Err(e @ DecodeError::TooLarge { .. }) => return Err(e),
                    // A raw stream can start with bytes that pass the zlib header check.
                    Err(_) => {}
                }
            }
            read_bounded(flate2::read::DeflateDecoder::new(body), body.len(), limit, "deflate")
                .map(Cow::Owned)
        }
    }
}

/// Decompresses a raw snappy block (not the framing format), refusing before allocating when
/// the declared length exceeds `limit`.
pub(crate) fn unsnappy(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let declared = snap::raw::decompress_len(body)
        .map_err(|e| DecodeError::Decompress { encoding: "snappy", detail: e.to_string() })?;
    if declared > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Decompress { encoding: "snappy", detail: e.to_string() })
}

/// The two-byte zlib header check of RFC 1950: deflate method, window ≤ 32 KiB, checksum.
fn looks_like_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// Reads all of `reader` into a buffer that never grows beyond `limit + 1` bytes; more output
/// than `limit` is `TooLarge`.
fn read_bounded(
    reader: impl Read,
    input_len: usize,
    limit: usize,
    encoding: &'static str,
) -> Result<Vec<u8>, DecodeError> {
    let cap = limit.saturating_add(1);
    let mut reader = reader.take(u64::try_from(cap).unwrap_or(u64::MAX));
    let mut out = Vec::with_capacity(input_len.saturating_mul(4).max(4096).min(cap));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= cap {
                return Err(DecodeError::TooLarge { limit });
            }
            let grown = out.capacity().saturating_mul(2).min(cap);
            out.reserve_exact(grown - out.len());
        }
        let filled = out.len();
        out.resize(out.capacity(), 0);
        let read = reader.read(out.get_mut(filled..).unwrap_or_default());
        match read {
            Ok(0) => {
                out.truncate(filled);
                break;
            }
            Ok(n) => out.truncate(filled + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(filled),
            Err(e) => return Err(DecodeError::Decompress { encoding, detail: e.to_string() }),
        }
    }
    if out.len() > limit { Err(DecodeError::TooLarge { limit }) } else { Ok(out) }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("in memory");
        e.finish().expect("in memory")
    }

    pub(crate) fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("in memory");
        e.finish().expect("in memory")
    }

    pub(crate) fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("in memory");
        e.finish().expect("in memory")
    }

    #[test]
    fn encoding_header_values() {
        assert_eq!(Encoding::parse(None).ok(), Some(Encoding::Identity));
        assert_eq!(Encoding::parse(Some("snappy")).ok(), Some(Encoding::Identity));
        assert_eq!(Encoding::parse(Some("")).ok(), Some(Encoding::Identity));
        assert_eq!(Encoding::parse(Some(" GZIP ")).ok(), Some(Encoding::Gzip));
        assert_eq!(Encoding::parse(Some("deflate")).ok(), Some(Encoding::Deflate));
        match Encoding::parse(Some("br")) {
            Err(DecodeError::UnsupportedEncoding(v)) => assert_eq!(v, "br"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inflates_gzip_raw_deflate_and_zlib() {
        let data = b"hello hello hello hello".repeat(100);
        for (enc, body) in [
            (Encoding::Gzip, gzip(&data)),
            (Encoding::Deflate, raw_deflate(&data)),
            (Encoding::Deflate, zlib(&data)),
        ] {
            let out = content_decode(&body, enc, data.len()).expect("inflates");
            assert_eq!(out.as_ref(), data.as_slice(), "{enc:?}");
        }
    }

    #[test]
    fn size_limit_applies_to_every_encoding() {
        let data = vec![b'a'; 10_000];
        for (enc, body) in [
            (Encoding::Gzip, gzip(&data)),
            (Encoding::Deflate, raw_deflate(&data)),
            (Encoding::Deflate, zlib(&data)),
        ] {
            assert!(content_decode(&body, enc, 10_000).is_ok(), "{enc:?} at the limit");
            match content_decode(&body, enc, 9_999) {
                Err(DecodeError::TooLarge { limit: 9_999 }) => {}
                other => panic!("{enc:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        // 64 MiB of zeros compresses to ~64 KiB; the limit is 1 MiB.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..64 {
            e.write_all(&chunk).expect("in memory");
        }
        let body = e.finish().expect("in memory");
        assert!(matches!(content_decode(&body, Encoding::Gzip, 1 << 20), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn corrupt_gzip_is_a_decompress_error() {
        let mut body = gzip(b"some text to compress");
        body.truncate(body.len() / 2);
        match content_decode(&body, Encoding::Gzip, 1000) {
            Err(DecodeError::Decompress { encoding: "gzip", .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(content_decode(b"not deflate at all", Encoding::Deflate, 1000).is_err());
    }

    #[test]
    fn snappy_roundtrip_and_limit() {
        let data = b"line line line".repeat(50);
        let body = snap::raw::Encoder::new().compress_vec(&data).expect("compresses");
        assert_eq!(unsnappy(&body, data.len()).expect("decompresses"), data);
        assert!(matches!(unsnappy(&body, data.len() - 1), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn snappy_huge_declared_length_is_refused_before_allocating() {
        // Varint preamble declaring 2^32 - 1 bytes, followed by nothing.
        let body = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert!(matches!(unsnappy(&body, 100 << 20), Err(DecodeError::TooLarge { .. })));
        // Snappy framing format is not raw snappy.
        let mut framed = snap::write::FrameEncoder::new(Vec::new());
        framed.write_all(b"hello").expect("in memory");
        let framed = framed.into_inner().expect("in memory");
        assert!(unsnappy(&framed, 100).is_err());
    }
}
