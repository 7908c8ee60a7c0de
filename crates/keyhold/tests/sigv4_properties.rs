//! SigV4 signatures made by botocore, an independent implementation, verify in Keyhold for
//! random requests, and any single changed byte of what was signed is rejected.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use keyhold::auth::sigv4::{self, AuthError, RequestParts, Sigv4Secret};
use serde_json::{Value, json};

const CASES: usize = 64;
const SIGNER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/botocore_sign_cases.py"
);

/// A small deterministic generator, so a failure can be reproduced from the case number.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| char::from(alphabet[self.below(alphabet.len())]))
            .collect()
    }

    /// A string of 1 to `max_len` characters.
    fn string_up_to(&mut self, alphabet: &[u8], max_len: usize) -> String {
        let len = 1 + self.below(max_len);
        self.string(alphabet, len)
    }
}

struct Case {
    path: String,
    host: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    region: String,
    access_key_id: String,
    secret: String,
}

fn generate(random: &mut Lcg) -> Case {
    const ID: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";
    const NAME: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    const VALUE: &[u8] = b"abcXYZ019 ;,=/:+-_.~!*'()";
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    for _ in 0..random.below(5) {
        let name = format!("x-{}", random.string_up_to(NAME, 12));
        if headers.iter().any(|(existing, _)| *existing == name) {
            continue;
        }
        let value = random.string_up_to(VALUE, 40);
        headers.push((name, value.trim().to_owned() + "v"));
    }
    let body_len = random.below(2000);
    Case {
        path: format!(
            "/{}/kms/xks/v1/keys/{}/encrypt",
            random.string_up_to(ID, 20),
            random.string_up_to(ID, 60)
        ),
        host: format!("xks-{}.example.com", random.string(b"abc123", 5)),
        headers,
        body: (0..body_len).map(|_| random.next() as u8).collect(),
        region: ["us-east-1", "eu-west-3", "ap-southeast-2"][random.below(3)].to_owned(),
        access_key_id: random.string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 24),
        secret: STANDARD.encode((0..32).map(|_| random.next() as u8).collect::<Vec<_>>()),
    }
}

fn header_map(case: &Case, signed: &Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_str(&case.host).expect("host"));
    for (name, value) in &case.headers {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    for (name, field) in [
        ("authorization", "authorization"),
        ("x-amz-date", "amz_date"),
    ] {
        let value = signed[field].as_str().expect("signed header");
        headers.insert(name, HeaderValue::from_str(value).expect("signed value"));
    }
    headers
}

fn verify(case: &Case, path: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), AuthError> {
    let secret = Sigv4Secret::new(case.secret.clone());
    let request = RequestParts {
        method: "POST",
        path,
        query: "",
        headers,
        body,
    };
    sigv4::verify(&request, |_| Some(&secret), &[], SystemTime::now()).map(drop)
}

#[test]
fn botocore_signatures_verify_and_changes_fail() {
    let mut random = Lcg(0x6b65_7968_6f6c_6400);
    let cases: Vec<Case> = (0..CASES).map(|_| generate(&mut random)).collect();
    let input = json!(
        cases
            .iter()
            .map(|case| json!({
                "path": case.path,
                "host": case.host,
                "headers": case.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "body": STANDARD.encode(&case.body),
                "region": case.region,
                "access_key_id": case.access_key_id,
                "secret": case.secret,
            }))
            .collect::<Vec<_>>()
    );
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), input.to_string()).expect("write cases");
    let output = std::process::Command::new("python3")
        .arg(SIGNER)
        .arg(file.path())
        .output()
        .expect("run python3 with botocore");
    assert!(
        output.status.success(),
        "botocore signer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let signed: Vec<Value> = serde_json::from_slice(&output.stdout).expect("signer output");
    assert_eq!(signed.len(), CASES);

    let mut mutations = 0;
    for (number, (case, signed)) in cases.iter().zip(&signed).enumerate() {
        let headers = header_map(case, signed);
        let result = verify(case, &case.path, &headers, &case.body);
        assert!(
            result.is_ok(),
            "case {number}: botocore signature rejected: {result:?}"
        );

        if !case.body.is_empty() {
            let mut body = case.body.clone();
            let index = random.below(body.len());
            body[index] ^= 1 << random.below(8);
            assert_eq!(
                verify(case, &case.path, &headers, &body),
                Err(AuthError::SignatureMismatch),
                "case {number}: changed body byte {index}"
            );
            mutations += 1;
        }

        let mut path = case.path.clone().into_bytes();
        let index = 1 + random.below(path.len() - 1);
        path[index] = if path[index] == b'a' { b'b' } else { b'a' };
        let path = String::from_utf8(path).expect("ASCII path");
        assert!(
            verify(case, &path, &headers, &case.body).is_err(),
            "case {number}: changed path"
        );
        mutations += 1;

        for (name, value) in &case.headers {
            let mut changed = headers.clone();
            let mut bytes = value.clone().into_bytes();
            let index = random.below(bytes.len());
            bytes[index] = if bytes[index] == b'z' { b'y' } else { b'z' };
            changed.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_bytes(&bytes).expect("value"),
            );
            assert_eq!(
                verify(case, &case.path, &changed, &case.body),
                Err(AuthError::SignatureMismatch),
                "case {number}: changed header {name}"
            );
            mutations += 1;
        }
    }
    eprintln!(
        "verified {CASES} botocore-signed requests and rejected {mutations} single-byte changes"
    );
    assert!(
        mutations >= CASES * 2,
        "too few mutations were checked: {mutations}"
    );
}
