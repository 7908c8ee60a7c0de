//! SigV4 on a raw HTTP/1.1 request: the `Authorization` header parser, the date parser, the
//! canonical request and the whole verification the server runs, with the route parser on the
//! path.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use keyhold::api::error::XksError;
use keyhold::api::route;
use keyhold::auth::sigv4::{self, AuthError, Authorization, RequestParts, Sigv4Secret};

use super::xks_body::check_error;

/// Access key id of the credential that signed the seed requests.
pub const ACCESS_KEY_ID: &str = "KHFUZZ00000000000001";

/// Secret access key of that credential. It exists only in this crate and its corpus, so the
/// seeds verify and the fuzzer starts from requests that reach the signature comparison.
pub const SECRET_ACCESS_KEY: &str = "fuzz-only-secret-access-key-not-used-anywhere-else";

/// Maximum number of headers parsed, because httparse fills a fixed-size array.
const MAX_HEADERS: usize = 64;

static SECRET: LazyLock<Sigv4Secret> =
    LazyLock::new(|| Sigv4Secret::new(SECRET_ACCESS_KEY.to_owned()));

/// A request split into the parts the server gives the verifier.
#[derive(Debug)]
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// Query without `?`, empty when there is none.
    pub query: &'a str,
    /// Every header, repeated ones included.
    pub headers: HeaderMap,
    /// Everything after the blank line that ends the headers.
    pub body: &'a [u8],
}

impl Request<'_> {
    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: &self.headers,
            body: self.body,
        }
    }
}

/// Parses a complete HTTP/1.1 request head followed by the body. Returns `None` when the head
/// is incomplete or invalid, or has a header that hyper would reject.
pub fn parse(data: &[u8]) -> Option<Request<'_>> {
    let mut raw_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut raw_headers);
    let httparse::Status::Complete(head_len) = head.parse(data).ok()? else {
        return None;
    };
    let target = head.path?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HeaderMap::new();
    for header in head.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(header.value).ok()?;
        headers.append(name, value);
    }
    Some(Request {
        method: head.method?,
        path,
        query,
        headers,
        body: &data[head_len..],
    })
}

/// Verifies a request as the server does, with the fuzz credential and any region, at the time
/// in its own `X-Amz-Date` so that the clock check passes. `None` when `data` is no request.
pub fn verify(data: &[u8]) -> Option<Result<Authorization, AuthError>> {
    let request = parse(data)?;
    Some(verify_parts(&request.parts()))
}

fn verify_parts(parts: &RequestParts<'_>) -> Result<Authorization, AuthError> {
    let now = parts
        .headers
        .get("x-amz-date")
        .and_then(|value| value.to_str().ok())
        .and_then(sigv4::parse_amz_date)
        .and_then(|secs| u64::try_from(secs).ok())
        .map_or(UNIX_EPOCH, |secs| UNIX_EPOCH + Duration::from_secs(secs));
    verify_at(parts, now)
}

fn verify_at(parts: &RequestParts<'_>, now: SystemTime) -> Result<Authorization, AuthError> {
    sigv4::verify(
        parts,
        |access_key_id| (access_key_id == ACCESS_KEY_ID).then_some(&*SECRET),
        &[],
        now,
    )
}

/// Runs the target on one raw request.
pub fn run(data: &[u8]) {
    let Some(request) = parse(data) else {
        return;
    };
    let _ = route::parse(request.path);
    check_header_parsers(&request.headers);

    let parts = request.parts();
    match verify_parts(&parts) {
        Ok(authorization) => check_verified(&request, &authorization),
        Err(error) => check_error(&XksError::from(&error)),
    }
}

/// Runs the public header parsers on every header value that is UTF-8, including the
/// non-ASCII values that `HeaderValue::to_str` keeps from them inside the server.
fn check_header_parsers(headers: &HeaderMap) {
    for value in headers.values() {
        let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
            continue;
        };
        if let Some(secs) = sigv4::parse_amz_date(text)
            && !text.ends_with("60Z")
        {
            // A leap second parses but formats as the next minute, so it cannot round-trip.
            assert_eq!(sigv4::format_amz_date(secs), text, "X-Amz-Date round trip");
        }
        if let Ok(authorization) = sigv4::parse_authorization(text) {
            let parts = RequestParts {
                method: "POST",
                path: "/",
                query: "",
                headers,
                body: b"",
            };
            let _ = sigv4::canonical_request(&parts, &authorization.signed_headers);
        }
    }
}

/// A request that verified must stop verifying when its body changes, because the signature
/// covers the SHA-256 of the body as received.
fn check_verified(request: &Request<'_>, authorization: &Authorization) {
    assert_eq!(authorization.access_key_id, ACCESS_KEY_ID);
    let mut changed_body = request.body.to_vec();
    changed_body.push(b'\n');
    let parts = RequestParts {
        body: &changed_body,
        ..request.parts()
    };
    assert_eq!(
        verify_parts(&parts),
        Err(AuthError::SignatureMismatch),
        "a changed body still verified"
    );
}
