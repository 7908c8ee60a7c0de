//! AWS Signature Version 4 for the XKS proxy API.
//!
//! The canonical request is rebuilt from the received method, path, query, the headers listed in
//! `SignedHeaders` and the SHA-256 of the received body; the `x-amz-content-sha256` header is never
//! trusted. The signature is compared in constant time, and `X-Amz-Date` must lie within five
//! minutes of the server clock.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::HeaderMap;
use ring::hmac;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The SigV4 service name of the XKS proxy API.
pub const SERVICE: &str = "kms-xks-proxy";

/// The only signing algorithm SigV4 defines.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Largest clock difference accepted between `X-Amz-Date` and the server clock, in seconds.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// A SigV4 secret access key, wiped on drop and never printed.
///
/// It remembers the last signing key it derived, because a credential signs for one date and
/// region at a time and the derivation takes four HMAC computations.
#[derive(Clone)]
pub struct Sigv4Secret {
    secret: Zeroizing<String>,
    signing_key: Arc<Mutex<Option<SigningKey>>>,
}

/// A derived SigV4 signing key and the scope it belongs to.
struct SigningKey {
    date: String,
    region: String,
    key: Zeroizing<Vec<u8>>,
}

impl Sigv4Secret {
    /// Wraps a secret access key.
    pub fn new(secret: String) -> Self {
        Self {
            secret: Zeroizing::new(secret),
            signing_key: Arc::default(),
        }
    }

    /// Exposes the secret. Call sites are the signer, the verifier and the one-time display
    /// of a new credential.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// The signing key for a scope date and region: the HMAC chain from `"AWS4" + secret`
    /// through date, region, service and `aws4_request`.
    fn signing_key(&self, date: &str, region: &str) -> Zeroizing<Vec<u8>> {
        let mut cached = self
            .signing_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = cached.as_ref()
            && found.date == date
            && found.region == region
        {
            return found.key.clone();
        }
        let mut seed = Zeroizing::new(String::with_capacity(4 + self.secret.len()));
        seed.push_str("AWS4");
        seed.push_str(&self.secret);
        let mut key = Zeroizing::new(hmac_sign(seed.as_bytes(), date.as_bytes()));
        for part in [region, SERVICE, "aws4_request"] {
            key = Zeroizing::new(hmac_sign(&key, part.as_bytes()));
        }
        *cached = Some(SigningKey {
            date: date.to_owned(),
            region: region.to_owned(),
            key: key.clone(),
        });
        key
    }
}

impl std::fmt::Debug for Sigv4Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sigv4Secret(redacted)")
    }
}

/// Why a request failed SigV4 authentication.
///
/// Messages name the failing part and what to check, never a secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing Authorization header; sign the request with AWS SigV4")]
    MissingAuthorization,
    /// More than one `Authorization` header.
    #[error("more than one Authorization header; send exactly one")]
    RepeatedAuthorization,
    /// The `Authorization` header does not have the SigV4 shape.
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(&'static str),
    /// The credential scope names another service or terminator.
    #[error("credential scope must end with /{SERVICE}/aws4_request, got /{0}")]
    WrongService(String),
    /// The credential scope names a region that is not allowed.
    #[error("region {0:?} in the credential scope is not in the allowed regions")]
    RegionNotAllowed(String),
    /// `SignedHeaders` lacks `host` or `x-amz-date`.
    #[error("SignedHeaders must include host and x-amz-date")]
    RequiredHeaderNotSigned,
    /// A header listed in `SignedHeaders` is absent or not printable.
    #[error("signed header {0:?} is missing from the request or is not printable ASCII")]
    SignedHeaderMissing(String),
    /// `X-Amz-Date` is missing or not in `YYYYMMDDTHHMMSSZ` form.
    #[error("missing or malformed X-Amz-Date header; expected YYYYMMDDTHHMMSSZ in UTC")]
    MalformedDate,
    /// The scope date differs from the date in `X-Amz-Date`.
    #[error("credential scope date does not match X-Amz-Date")]
    ScopeDateMismatch,
    /// `X-Amz-Date` is more than five minutes from the server clock.
    #[error("X-Amz-Date is more than 5 minutes away from the server time; check the client clock")]
    ClockSkew,
    /// The access key id is unknown for this URI path prefix, or revoked.
    #[error("access key id {0:?} is not an active credential for this URI path prefix")]
    UnknownAccessKey(String),
    /// The signature does not match.
    #[error(
        "signature does not match; check the secret access key, the region and that the body, path and signed headers were sent as signed"
    )]
    SignatureMismatch,
}

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Access key id from the credential scope.
    pub access_key_id: String,
    /// Scope date, `YYYYMMDD`.
    pub date: String,
    /// Scope region.
    pub region: String,
    /// Scope service.
    pub service: String,
    /// Lower-case header names, in the order given.
    pub signed_headers: Vec<String>,
    /// Hex signature as sent.
    pub signature: String,
}

/// The request parts a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// HTTP method, for example `POST`.
    pub method: &'a str,
    /// Path exactly as received, before any percent-decoding.
    pub path: &'a str,
    /// Raw query string without `?`, empty when there is none.
    pub query: &'a str,
    /// All request headers.
    pub headers: &'a HeaderMap,
    /// The raw body bytes.
    pub body: &'a [u8],
}

/// Parses a SigV4 `Authorization` header value.
///
/// # Errors
///
/// Returns [`AuthError::MalformedAuthorization`] naming the part that is wrong.
pub fn parse_authorization(value: &str) -> Result<Authorization, AuthError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or(AuthError::MalformedAuthorization(
            "expected AWS4-HMAC-SHA256 followed by a space",
        ))?;

    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for component in rest.split(',') {
        let component = component.trim_matches(' ');
        let (name, value) = component
            .split_once('=')
            .ok_or(AuthError::MalformedAuthorization(
                "expected name=value components",
            ))?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(AuthError::MalformedAuthorization("unknown component")),
        };
        if slot.replace(value).is_some() {
            return Err(AuthError::MalformedAuthorization("repeated component"));
        }
    }

    let credential = credential.ok_or(AuthError::MalformedAuthorization("missing Credential"))?;
    let signed_headers =
        signed_headers.ok_or(AuthError::MalformedAuthorization("missing SignedHeaders"))?;
    let signature = signature.ok_or(AuthError::MalformedAuthorization("missing Signature"))?;

    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = scope[..] else {
        return Err(AuthError::MalformedAuthorization(
            "Credential must be ACCESS_KEY_ID/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if access_key_id.is_empty() || region.is_empty() {
        return Err(AuthError::MalformedAuthorization(
            "empty access key id or region",
        ));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::MalformedAuthorization(
            "scope date must be YYYYMMDD",
        ));
    }
    if service != SERVICE || terminator != "aws4_request" {
        return Err(AuthError::WrongService(format!("{service}/{terminator}")));
    }

    let signed_headers: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
    let well_formed = signed_headers.iter().all(|name| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    });
    if !well_formed || !signed_headers.windows(2).all(|pair| pair[0] < pair[1]) {
        return Err(AuthError::MalformedAuthorization(
            "SignedHeaders must be lower-case names, sorted and separated by ';'",
        ));
    }

    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(AuthError::MalformedAuthorization(
            "Signature must be 64 lower-case hex digits",
        ));
    }

    Ok(Authorization {
        access_key_id: access_key_id.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature: signature.to_owned(),
    })
}

/// Verifies the SigV4 signature of a request.
///
/// `lookup` returns the secret of an active access key id. `allowed_regions` empty means any
/// region. `now` is the server clock.
///
/// # Errors
///
/// Returns the [`AuthError`] that describes the first check that failed.
pub fn verify<'s>(
    request: &RequestParts<'_>,
    lookup: impl FnOnce(&str) -> Option<&'s Sigv4Secret>,
    allowed_regions: &[String],
    now: SystemTime,
) -> Result<Authorization, AuthError> {
    let mut values = request.headers.get_all(hyper::header::AUTHORIZATION).iter();
    let header = match (values.next(), values.next()) {
        (Some(header), None) => header,
        (None, _) => return Err(AuthError::MissingAuthorization),
        (Some(_), Some(_)) => return Err(AuthError::RepeatedAuthorization),
    };
    let header = header
        .to_str()
        .map_err(|_| AuthError::MalformedAuthorization("not printable ASCII"))?;
    let authorization = parse_authorization(header)?;

    if !allowed_regions.is_empty() && !allowed_regions.contains(&authorization.region) {
        return Err(AuthError::RegionNotAllowed(authorization.region));
    }
    let signs = |name: &str| authorization.signed_headers.iter().any(|h| h == name);
    if !signs("host") || !signs("x-amz-date") {
        return Err(AuthError::RequiredHeaderNotSigned);
    }

    let amz_date = single_header(request.headers, "x-amz-date").ok_or(AuthError::MalformedDate)?;
    let signed_at = parse_amz_date(amz_date).ok_or(AuthError::MalformedDate)?;
    if amz_date[..8] != authorization.date {
        return Err(AuthError::ScopeDateMismatch);
    }
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
    });
    if (now_secs - signed_at).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(AuthError::ClockSkew);
    }

    let secret = lookup(&authorization.access_key_id)
        .ok_or_else(|| AuthError::UnknownAccessKey(authorization.access_key_id.clone()))?;

    let canonical = canonical_request(request, &authorization.signed_headers)?;
    let expected = signature_hex(
        secret,
        &authorization.date,
        &authorization.region,
        amz_date,
        &canonical,
    );
    if bool::from(
        expected
            .as_bytes()
            .ct_eq(authorization.signature.as_bytes()),
    ) {
        Ok(authorization)
    } else {
        Err(AuthError::SignatureMismatch)
    }
}

/// Builds the SigV4 canonical request.
///
/// # Errors
///
/// Returns [`AuthError::SignedHeaderMissing`] when a signed header is absent or not printable.
pub fn canonical_request(
    request: &RequestParts<'_>,
    signed_headers: &[String],
) -> Result<String, AuthError> {
    let mut canonical = String::with_capacity(256 + 64 * signed_headers.len());
    canonical.push_str(request.method);
    canonical.push('\n');
    canonical_uri(request.path, &mut canonical);
    canonical.push('\n');
    canonical_query(request.query, &mut canonical);
    canonical.push('\n');

    for name in signed_headers {
        let mut values = request.headers.get_all(name.as_str()).iter().peekable();
        if values.peek().is_none() {
            return Err(AuthError::SignedHeaderMissing(name.clone()));
        }
        canonical.push_str(name);
        canonical.push(':');
        for (index, value) in values.enumerate() {
            let value = value
                .to_str()
                .map_err(|_| AuthError::SignedHeaderMissing(name.clone()))?;
            if index > 0 {
                canonical.push(',');
            }
            push_trimmed(value, &mut canonical);
        }
        canonical.push('\n');
    }
    canonical.push('\n');
    for (index, name) in signed_headers.iter().enumerate() {
        if index > 0 {
            canonical.push(';');
        }
        canonical.push_str(name);
    }
    canonical.push('\n');
    crate::crypto::push_hex(&crate::crypto::sha256(request.body), &mut canonical);
    Ok(canonical)
}

/// Computes the hex signature of a canonical request.
pub fn signature_hex(
    secret: &Sigv4Secret,
    date: &str,
    region: &str,
    amz_date: &str,
    canonical_request: &str,
) -> String {
    let mut string_to_sign = String::with_capacity(160 + region.len());
    for part in [
        ALGORITHM, "\n", amz_date, "\n", date, "/", region, "/", SERVICE,
    ] {
        string_to_sign.push_str(part);
    }
    string_to_sign.push_str("/aws4_request\n");
    crate::crypto::push_hex(
        &crate::crypto::sha256(canonical_request.as_bytes()),
        &mut string_to_sign,
    );

    let key = secret.signing_key(date, region);
    crate::crypto::to_hex(&hmac_sign(&key, string_to_sign.as_bytes()))
}

/// Signs a request and returns the `Authorization` header value.
///
/// Every header in `headers` is signed; it must contain `host` and `x-amz-date` (lower-case
/// names). The load generator and the tests use this; the server only verifies.
///
/// # Errors
///
/// Returns [`AuthError::MalformedDate`] when `x-amz-date` is missing or malformed.
pub fn sign(
    request: &RequestParts<'_>,
    access_key_id: &str,
    secret: &Sigv4Secret,
    region: &str,
) -> Result<String, AuthError> {
    let amz_date = single_header(request.headers, "x-amz-date").ok_or(AuthError::MalformedDate)?;
    parse_amz_date(amz_date).ok_or(AuthError::MalformedDate)?;
    let mut signed_headers: Vec<String> = request
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .collect();
    signed_headers.sort();
    signed_headers.dedup();
    let canonical = canonical_request(request, &signed_headers)?;
    let date = &amz_date[..8];
    let signature = signature_hex(secret, date, region, amz_date, &canonical);
    Ok(format!(
        "{ALGORITHM} Credential={access_key_id}/{date}/{region}/{SERVICE}/aws4_request, SignedHeaders={}, Signature={signature}",
        signed_headers.join(";")
    ))
}

/// Formats a Unix time as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    )
}

/// Parses `YYYYMMDDTHHMMSSZ` into Unix seconds.
pub fn parse_amz_date(value: &str) -> Option<i64> {
    let bytes = value.as_bytes();
    // ASCII only, so that the fields below are sliced on character boundaries.
    if bytes.len() != 16 || !value.is_ascii() || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = &value[range];
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().ok(),
        _ => None,
    }
}

fn hmac_sign(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// Appends a header value with leading and trailing spaces removed and inner runs of spaces
/// collapsed to one, as SigV4 requires.
fn push_trimmed(value: &str, out: &mut String) {
    let mut pending_space = false;
    for c in value.trim_matches([' ', '\t']).chars() {
        if c == ' ' || c == '\t' {
            pending_space = true;
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
    }
}

/// Appends the canonical URI: every byte of the received path percent-encoded except the
/// unreserved characters and `/`. A `%` in the path is encoded again, as SigV4 prescribes
/// for every service but S3.
fn canonical_uri(path: &str, out: &mut String) {
    if path.is_empty() {
        out.push('/');
        return;
    }
    for byte in path.bytes() {
        push_encoded(byte, true, out);
    }
}

/// Appends the canonical query string: parameters decoded, re-encoded and sorted.
fn canonical_query(query: &str, out: &mut String) {
    if query.is_empty() {
        return;
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                encode_component(&percent_decode(name)),
                encode_component(&percent_decode(value)),
            )
        })
        .collect();
    pairs.sort();
    for (index, (name, value)) in pairs.iter().enumerate() {
        if index > 0 {
            out.push('&');
        }
        let _ = write!(out, "{name}={value}");
    }
}

fn encode_component(bytes: &[u8]) -> String {
    let mut encoded = String::with_capacity(bytes.len());
    for &byte in bytes {
        push_encoded(byte, false, &mut encoded);
    }
    encoded
}

fn push_encoded(byte: u8, keep_slash: bool, out: &mut String) {
    let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~');
    if unreserved || (keep_slash && byte == b'/') {
        out.push(char::from(byte));
    } else {
        let _ = write!(out, "%{byte:02X}");
    }
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex_pair = bytes.get(index + 1..index + 3).and_then(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        });
        match (bytes[index], hex_pair) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                index += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    decoded
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper::header::{HeaderName, HeaderValue};

    use super::*;

    const VECTOR_ACCESS_KEY: &str = "HGIE2BUAFNDMBCMSQVWLGCEXAMPLE";
    const VECTOR_SECRET: &str = "VU6W2byoiBrhDqNGbx703oL0syCAmhlQgwNUT123456";
    const VECTOR_BODY: &[u8] = br#"{"requestMetadata":{"kmsOperation":"KmsHealthCheck","kmsRequestId":"1124f4d6-db54-4af4-ae30-c55a22a8abcd"}}"#;
    const VECTOR_SIGNATURE: &str =
        "a3e9b18d9e59f89cf011aa21a0a3f165d23f9d7eb33d1995f1cba6834f596b6d";

    fn vector_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("xks.example.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20240515T000000Z"));
        headers
    }

    fn vector_request(headers: &HeaderMap) -> RequestParts<'_> {
        RequestParts {
            method: "POST",
            path: "/path/kms/xks/v1/health",
            query: "",
            headers,
            body: VECTOR_BODY,
        }
    }

    fn vector_time() -> SystemTime {
        let signed_at = parse_amz_date("20240515T000000Z").expect("valid date");
        UNIX_EPOCH + Duration::from_secs(u64::try_from(signed_at).expect("after 1970"))
    }

    fn with_authorization(mut headers: HeaderMap, signature: &str) -> HeaderMap {
        let value = format!(
            "AWS4-HMAC-SHA256 Credential={VECTOR_ACCESS_KEY}/20240515/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"
        );
        headers.insert(
            hyper::header::AUTHORIZATION,
            HeaderValue::from_str(&value).expect("ASCII header"),
        );
        headers
    }

    #[test]
    fn known_answer_vector_hashes_and_signature() {
        let headers = vector_headers();
        let request = vector_request(&headers);
        assert_eq!(
            hex::encode(crate::crypto::sha256(VECTOR_BODY)),
            "ebb9c8419d64a08529aa7a6da1bc3f485c284714a613aeb6e94b30bc5b3c2f23"
        );
        let signed = ["host".to_owned(), "x-amz-date".to_owned()];
        let canonical = canonical_request(&request, &signed).expect("headers present");
        assert_eq!(
            hex::encode(crate::crypto::sha256(canonical.as_bytes())),
            "0fa15635734a635502cab078dbfe8d2a103429442735c6406b3d7eca4ed4a55c"
        );
        let secret = Sigv4Secret::new(VECTOR_SECRET.to_owned());
        let authorization = sign(&request, VECTOR_ACCESS_KEY, &secret, "us-east-1").expect("signs");
        assert!(authorization.ends_with(VECTOR_SIGNATURE), "{authorization}");
    }

    #[test]
    fn verify_accepts_known_answer_vector() {
        let headers = with_authorization(vector_headers(), VECTOR_SIGNATURE);
        let secret = Sigv4Secret::new(VECTOR_SECRET.to_owned());
        let verified = verify(
            &vector_request(&headers),
            |_| Some(&secret),
            &[],
            vector_time(),
        )
        .expect("vector verifies");
        assert_eq!(verified.access_key_id, VECTOR_ACCESS_KEY);
        assert_eq!(verified.region, "us-east-1");
    }

    #[test]
    fn verify_rejects_changed_body() {
        let headers = with_authorization(vector_headers(), VECTOR_SIGNATURE);
        let secret = Sigv4Secret::new(VECTOR_SECRET.to_owned());
        let mut request = vector_request(&headers);
        let mut body = VECTOR_BODY.to_vec();
        body[10] ^= 1;
        request.body = &body;
        let result = verify(&request, |_| Some(&secret), &[], vector_time());
        assert_eq!(result, Err(AuthError::SignatureMismatch));
    }

    #[test]
    fn verify_rejects_each_flipped_signature_digit() {
        let secret = Sigv4Secret::new(VECTOR_SECRET.to_owned());
        for index in 0..VECTOR_SIGNATURE.len() {
            let mut signature = VECTOR_SIGNATURE.as_bytes().to_vec();
            signature[index] = if signature[index] == b'0' { b'1' } else { b'0' };
            let signature = String::from_utf8(signature).expect("ASCII");
            let headers = with_authorization(vector_headers(), &signature);
            let result = verify(
                &vector_request(&headers),
                |_| Some(&secret),
                &[],
                vector_time(),
            );
            assert_eq!(result, Err(AuthError::SignatureMismatch), "digit {index}");
        }
    }

    #[test]
    fn verify_rejects_stale_and_future_dates() {
        let headers = with_authorization(vector_headers(), VECTOR_SIGNATURE);
        let secret = Sigv4Secret::new(VECTOR_SECRET.to_owned());
        let request = vector_request(&headers);
        for offset in [Duration::from_secs(301), Duration::from_secs(3600)] {
            let later = verify(&request, |_| Some(&secret), &[], vector_time() + offset);
            assert_eq!(later, Err(AuthError::ClockSkew));
            let earlier = verify(&request, |_| Some(&secret), &[], vector_time() - offset);
            assert_eq!(earlier, Err(AuthError::ClockSkew));
        }
        let edge = verify(
            &request,
            |_| Some(&secret),
            &[],
            vector_time() + Duration::from_secs(300),
        );
        assert!(edge.is_ok());
    }

    #[test]
    fn verify_rejects_unknown_key_and_region() {
        let headers = with_authorization(vector_headers(), VECTOR_SIGNATURE);
        let request = vector_request(&headers);
        let unknown = verify(&request, |_| None, &[], vector_time());
        assert!(matches!(unknown, Err(AuthError::UnknownAccessKey(_))));
        let secret = Sigv4Secret::new(VECTOR_SECRET.to_owned());
        let regions = ["eu-west-1".to_owned()];
        let region = verify(&request, |_| Some(&secret), &regions, vector_time());
        assert!(matches!(region, Err(AuthError::RegionNotAllowed(_))));
    }

    #[test]
    fn verify_requires_host_and_date_signed() {
        let mut headers = vector_headers();
        let value = format!(
            "AWS4-HMAC-SHA256 Credential={VECTOR_ACCESS_KEY}/20240515/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=x-amz-date, Signature={VECTOR_SIGNATURE}"
        );
        headers.insert(
            hyper::header::AUTHORIZATION,
            HeaderValue::from_str(&value).expect("ASCII"),
        );
        let secret = Sigv4Secret::new(VECTOR_SECRET.to_owned());
        let result = verify(
            &vector_request(&headers),
            |_| Some(&secret),
            &[],
            vector_time(),
        );
        assert_eq!(result, Err(AuthError::RequiredHeaderNotSigned));
    }

    #[test]
    fn verify_checks_extra_signed_headers() {
        let mut headers = vector_headers();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let secret = Sigv4Secret::new(VECTOR_SECRET.to_owned());
        let authorization = sign(
            &vector_request(&headers),
            VECTOR_ACCESS_KEY,
            &secret,
            "us-east-1",
        )
        .expect("signs");
        assert!(authorization.contains("SignedHeaders=content-type;host;x-amz-date"));
        headers.insert(
            hyper::header::AUTHORIZATION,
            HeaderValue::from_str(&authorization).expect("ASCII"),
        );
        assert!(
            verify(
                &vector_request(&headers),
                |_| Some(&secret),
                &[],
                vector_time()
            )
            .is_ok()
        );

        headers.insert(
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("text/plain"),
        );
        let changed = verify(
            &vector_request(&headers),
            |_| Some(&secret),
            &[],
            vector_time(),
        );
        assert_eq!(changed, Err(AuthError::SignatureMismatch));
        headers.remove("content-type");
        let removed = verify(
            &vector_request(&headers),
            |_| Some(&secret),
            &[],
            vector_time(),
        );
        assert!(matches!(removed, Err(AuthError::SignedHeaderMissing(_))));
    }

    #[test]
    fn parse_rejects_malformed_headers() {
        let cases = [
            "AWS4-HMAC-SHA1 Credential=A/20240515/r/kms-xks-proxy/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=A/2024/r/kms-xks-proxy/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=A/20240515/r/kms/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=A/20240515/r/kms-xks-proxy/aws4_request, SignedHeaders=x-amz-date;host, Signature=a3e9b18d9e59f89cf011aa21a0a3f165d23f9d7eb33d1995f1cba6834f596b6d",
            "AWS4-HMAC-SHA256 Credential=A/20240515/r/kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date, Signature=XYZ",
        ];
        for case in cases {
            assert!(parse_authorization(case).is_err(), "accepted: {case}");
        }
    }

    #[test]
    fn cached_signing_key_follows_scope() {
        let secret = Sigv4Secret::new(VECTOR_SECRET.to_owned());
        let first = signature_hex(&secret, "20240515", "us-east-1", "20240515T000000Z", "x");
        let other_region = signature_hex(&secret, "20240515", "eu-west-1", "20240515T000000Z", "x");
        let other_date = signature_hex(&secret, "20240516", "us-east-1", "20240516T000000Z", "x");
        let again = signature_hex(&secret, "20240515", "us-east-1", "20240515T000000Z", "x");
        assert_ne!(first, other_region, "region is part of the signing key");
        assert_ne!(first, other_date, "date is part of the signing key");
        assert_eq!(first, again, "the cached key gives the same signature");
        let fresh = Sigv4Secret::new(VECTOR_SECRET.to_owned());
        assert_eq!(
            signature_hex(&fresh, "20240516", "us-east-1", "20240516T000000Z", "x"),
            other_date,
            "a cached key equals a freshly derived one"
        );
    }

    #[test]
    fn amz_date_round_trips() {
        for value in ["19700101T000000Z", "20240229T235959Z", "20261204T161052Z"] {
            let secs = parse_amz_date(value).expect("valid date");
            assert_eq!(format_amz_date(secs), value);
        }
        for value in [
            "20240230T000000Z",
            "20241301T000000Z",
            "2024-05-15T00:00:00Z",
            "20240515T000000",
        ] {
            assert_eq!(parse_amz_date(value), None, "{value}");
        }
    }

    #[test]
    fn canonical_uri_encodes_reserved_bytes() {
        let mut out = String::new();
        canonical_uri("/a b/%2F/key_1.v-2~", &mut out);
        assert_eq!(out, "/a%20b/%252F/key_1.v-2~");
    }
}
