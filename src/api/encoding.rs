//! Compressed request bodies (`Content-Encoding: gzip`, for dataset uploads): decompressed as a
//! stream, never whole in memory before parsing, and under the same byte limit as an
//! uncompressed body — a decompression bomb stops reading at the limit and gets a 413, it does
//! not grow the server's memory. Runs wherever its reader is read (a blocking thread).

use crate::error::{ApiError, ErrorCode};
use axum::http::{HeaderMap, header};
use flate2::bufread::MultiGzDecoder;
use std::io::{self, BufReader, Read};

/// How a request body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEncoding {
    Identity,
    Gzip,
}

/// The body's `Content-Encoding`: none or `identity`, or `gzip` (`x-gzip`).
///
/// # Errors
/// Any other coding (or several) → 415.
pub fn body_encoding(headers: &HeaderMap) -> Result<BodyEncoding, ApiError> {
    let Some(v) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(BodyEncoding::Identity);
    };
    let v = v.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match v.as_str() {
        "" | "identity" => Ok(BodyEncoding::Identity),
        "gzip" | "x-gzip" => Ok(BodyEncoding::Gzip),
        _ => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("Content-Encoding {v:?} is not supported: send gzip, or no encoding"),
        )),
    }
}

/// The decompressed body passed its limit.
#[derive(Debug, thiserror::Error)]
#[error("the decompressed body is larger than {limit} bytes")]
pub struct DecodedTooLarge {
    pub limit: usize,
}

/// The body is not a gzip stream.
#[derive(Debug, thiserror::Error)]
#[error("the body is not valid gzip ({0})")]
pub struct BadGzip(String);

/// Reads the decompressed bytes of a gzip stream (one or more members), at most `limit` of
/// them: one byte more is an error carrying [`DecodedTooLarge`]. Corrupt input is an error
/// carrying [`BadGzip`]; errors of the underlying reader pass through unchanged.
pub struct Gunzip<R> {
    inner: MultiGzDecoder<BufReader<R>>,
    left: usize,
    limit: usize,
}

impl<R: Read> Gunzip<R> {
    pub fn new(input: R, limit: usize) -> Self {
        Gunzip {
            inner: MultiGzDecoder::new(BufReader::with_capacity(64 * 1024, input)),
            left: limit,
            limit,
        }
    }
}

impl<R: Read> Read for Gunzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Never ask for more than one byte past the limit: that byte, if it comes, is the
        // proof the body is too large, and nothing beyond it is ever decompressed.
        let cap = buf.len().min(self.left.saturating_add(1));
        let n = self.inner.read(&mut buf[..cap]).map_err(classify)?;
        if n > self.left {
            return Err(io::Error::other(DecodedTooLarge { limit: self.limit }));
        }
        self.left -= n;
        Ok(n)
    }
}

/// The decoder's own complaints (a bad header, corrupt deflate data, a wrong checksum, a
/// truncated stream) become [`BadGzip`]; the source's errors (kind `Other`: the body's size
/// limit, a dropped connection) stay as they are.
fn classify(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
            io::Error::other(BadGzip(e.to_string()))
        }
        _ => e,
    }
}

/// Decompresses a whole (already size-limited) body. Blocking: CPU work.
///
/// # Errors
/// 413 past `limit` decompressed bytes; 422 when the body is not gzip.
pub fn gunzip_all(body: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    Gunzip::new(body, limit)
        .read_to_end(&mut out)
        .map_err(|e| decode_error(&e))?;
    Ok(out)
}

/// The API error of a failed decompression: 413 past the limit, 422 for corrupt gzip, `None`
/// for any other failure (the caller's to map).
pub fn gzip_error(e: &io::Error) -> Option<ApiError> {
    let inner = e.get_ref()?;
    if let Some(big) = inner.downcast_ref::<DecodedTooLarge>() {
        return Some(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("datasets are limited to {} bytes (decompressed)", big.limit),
        ));
    }
    inner
        .downcast_ref::<BadGzip>()
        .map(|bad| ApiError::invalid("body", bad))
}

fn decode_error(e: &io::Error) -> ApiError {
    gzip_error(e).unwrap_or_else(|| ApiError::invalid("body", format!("could not read it: {e}")))
}

/// A boxed reader of the body as sent, or decompressed.
pub fn decoded<R: Read + Send + 'static>(
    input: R,
    encoding: BodyEncoding,
    limit: usize,
) -> Box<dyn Read + Send> {
    match encoding {
        BodyEncoding::Identity => Box::new(input),
        BodyEncoding::Gzip => Box::new(Gunzip::new(input, limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn round_trips_up_to_the_limit_and_refuses_one_byte_more() {
        let data = b"a,b\n1,2\n".repeat(1000);
        assert_eq!(gunzip_all(&gz(&data), data.len()).unwrap(), data);
        let e = gunzip_all(&gz(&data), data.len() - 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::PayloadTooLarge);
        // Two members read as one stream (what `cat a.gz b.gz` makes).
        let mut two = gz(b"a,b\n");
        two.extend(gz(b"1,2\n"));
        assert_eq!(gunzip_all(&two, 100).unwrap(), b"a,b\n1,2\n");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 64 MiB of zeros in ≈ 64 KiB; only limit + 1 bytes are ever decompressed.
        let bomb = gz(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let mut r = Gunzip::new(&bomb[..], 1 << 20);
        let mut sink = Vec::new();
        let e = r.read_to_end(&mut sink).unwrap_err();
        assert!(gzip_error(&e).is_some_and(|a| a.code == ErrorCode::PayloadTooLarge));
        assert!(sink.len() <= 1 << 20);
    }

    #[test]
    fn corrupt_and_truncated_streams_are_bad_gzip() {
        let e = gunzip_all(b"a,b\n1,2\n", 100).unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationFailed, "{e:?}");
        assert!(e.message.contains("not valid gzip"), "{e:?}");
        let whole = gz(&b"a,b\n1,2\n".repeat(100));
        let e = gunzip_all(&whole[..whole.len() / 2], 10_000).unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationFailed, "{e:?}");
    }
}
