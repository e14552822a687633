//! HTTP bodies both listeners' routes use: answers sent whole or streamed, and request bodies
//! read with a size cap.

use bytes::Bytes;
use estiba_api::{ApiError, Common};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

/// Response bodies: whole (API answers, no allocation beyond the bytes) or streamed (registry
/// blobs, see [`crate::registry`]).
pub type Body = http_body_util::Either<Full<Bytes>, ChannelBody>;

/// A body sent whole.
pub fn full(b: Bytes) -> Body {
    http_body_util::Either::Left(Full::new(b))
}

/// A body streamed from a channel: each message is a frame, an error ends the response.
pub fn streamed(rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Body {
    http_body_util::Either::Right(ChannelBody { rx })
}

/// The streamed body of [`streamed`].
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::io::Result<hyper::body::Frame<Bytes>>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(hyper::body::Frame::data)))
    }
}

/// An answer with a whole body, its length and content type.
pub fn response(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// How much of an oversized body is read (and dropped) before answering 413.
const DRAIN_LIMIT: usize = 64 << 20;

/// Reads a request body, refusing anything larger than `max` (before and after decoding a
/// `Content-Encoding: gzip` body: botocore gzips CloudWatch's PutMetricData bodies past 10 KB,
/// as the model's `requestcompression` trait asks).
pub async fn read(req: Request<Incoming>, max: usize) -> Result<Bytes, ApiError> {
    read_hashed(req, max, false).await.map(|(b, _)| b)
}

/// [`read`], with the SHA-256 of the body as sent (before gzip is undone) when `hash`, for
/// SigV4 verification (zeros otherwise), and the body as sent (to forward it as received).
pub async fn read_hashed(req: Request<Incoming>, max: usize, hash: bool) -> Result<(Bytes, [u8; 32]), ApiError> {
    read_full(req, max, hash).await.map(|(b, h, _)| (b, h))
}

/// [`read_hashed`], with the body as sent too (the same bytes unless gzipped).
pub async fn read_full(req: Request<Incoming>, max: usize, hash: bool) -> Result<(Bytes, [u8; 32], Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    read_body(&parts.headers, body, max, hash).await
}

/// [`read_full`] of a request already split, so that its caller keeps the head without
/// copying its headers.
pub async fn read_body(
    headers: &hyper::HeaderMap,
    body: Incoming,
    max: usize,
    hash: bool,
) -> Result<(Bytes, [u8; 32], Bytes), ApiError> {
    use sha2::Digest as _;
    let gzip = headers
        .get(hyper::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().eq_ignore_ascii_case("gzip")));
    let raw = read_raw(headers, body, max).await?;
    let sha = if hash { sha2::Sha256::digest(&raw).into() } else { [0; 32] };
    if !gzip {
        return Ok((raw.clone(), sha, raw));
    }
    use std::io::Read;
    let mut out = Vec::with_capacity(raw.len() * 4);
    let mut dec = flate2::read::MultiGzDecoder::new(&raw[..]).take(max as u64 + 1);
    if let Err(e) = dec.read_to_end(&mut out) {
        return Err(ApiError::new(
            Common::SerializationException,
            format!("Could not decode the gzip request body (Content-Encoding: gzip): {e}"),
        ));
    }
    if out.len() > max {
        // The size it decodes to, counted (not kept) up to 16 times the limit: past that, a
        // bomb is not worth the time and the size is left unsaid.
        let bound = 16 * max as u64;
        let rest = std::io::copy(&mut dec.into_inner().take(bound), &mut std::io::sink()).unwrap_or(bound);
        let size = (rest < bound).then(|| max + 1 + rest as usize);
        return Err(too_large(size, max));
    }
    Ok((Bytes::from(out), sha, raw))
}

/// AWS's words for a body over the limit (CloudWatch's "Request size 47947 exceeded 40960
/// bytes"); `size` is unknown when a body without a length is cut off at the limit.
pub fn too_large(size: Option<usize>, max: usize) -> ApiError {
    let message = match size {
        Some(n) => format!("Request size {n} exceeded {max} bytes"),
        None => format!("Request size exceeded {max} bytes"),
    };
    ApiError::new(Common::RequestEntityTooLarge, message)
}

/// How long a client has to send a request's body: a client trickling one holds a connection
/// for no longer.
pub const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

async fn read_raw(headers: &hyper::HeaderMap, mut body: Incoming, max: usize) -> Result<Bytes, ApiError> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_none_or(|len| len <= max) {
        let Ok(collected) = tokio::time::timeout(BODY_DEADLINE, Limited::new(&mut body, max).collect()).await else {
            return Err(ApiError::new(
                Common::RequestTimeout,
                format!("The request body was not received within {} seconds.", BODY_DEADLINE.as_secs()),
            ));
        };
        match collected {
            Ok(c) => return Ok(c.to_bytes()),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {}
            Err(e) => {
                return Err(ApiError::new(
                    Common::SerializationException,
                    format!("Could not read the request body: {e}"),
                ))
            }
        }
    }
    // Too large. Drain a bounded amount so that a client still sending gets the error rather
    // than a reset connection; past that the connection is closed.
    let mut drained = 0usize;
    while drained < DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(f)) => drained += f.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
    Err(too_large(declared, max))
}
