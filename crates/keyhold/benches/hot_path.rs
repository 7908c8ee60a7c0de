//! Criterion micro-benchmarks of the steps of one XKS encrypt request: SigV4 verification,
//! body parsing with base64 decoding, encryption with the integrity value on an in-memory
//! snapshot with a software key, and the response body.
//!
//! Run with `cargo bench -p keyhold --bench hot_path`. Each benchmark runs for 32-byte and
//! 4,300-byte plaintexts (a data key, and the largest plaintext AWS KMS sends) with 1 KiB of AAD.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use keyhold::api::body;
use keyhold::api::route::Operation;
use keyhold::auth::Sigv4Secret;
use keyhold::auth::sigv4::{self, RequestParts};
use keyhold::keystore::root::FileRootKey;
use keyhold::keystore::snapshot::DomainView;
use keyhold::keystore::store::Store;
use keyhold::keystore::{KeyStore, NewDomain, NewKey};
use keyhold::policy::RequestContext;
use keyhold::service::encrypt::{self, EncryptInput};

const PLAINTEXT_SIZES: [usize; 2] = [32, 4300];
const AAD_SIZE: usize = 1024;
const ACCESS_KEY_ID: &str = "KHBENCHMARKACCESSKEY2345";
const SECRET: &str = "VU6W2byoiBrhDqNGbx703oL0syCAmhlQgwNUT123456";
const PATH: &str = "/domains/bench/kms/xks/v1/keys/k1/encrypt";
const KMS_KEY_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/bench";
const SIGNED_AT: u64 = 1_778_889_600;

/// Builds an encrypt body as AWS KMS sends it, with the integrity value requested.
fn encrypt_body(plaintext_size: usize) -> Vec<u8> {
    serde_json::json!({
        "requestMetadata": {
            "awsPrincipalArn": "arn:aws:iam::111122223333:role/bench",
            "kmsKeyArn": KMS_KEY_ARN,
            "kmsOperation": "Encrypt",
            "kmsRequestId": "7d9c3e0a-2c4f-4f6e-9a55-0d9f8f3b1c2e",
        },
        "plaintext": STANDARD.encode(vec![0x5a; plaintext_size]),
        "encryptionAlgorithm": "AES_GCM",
        "additionalAuthenticatedData": STANDARD.encode(vec![0xa5; AAD_SIZE]),
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
    })
    .to_string()
    .into_bytes()
}

/// Headers of a signed request, as curl and AWS KMS send them.
fn signed_headers(body: &[u8], secret: &Sigv4Secret) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("xks.example.com"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let amz_date = sigv4::format_amz_date(i64::try_from(SIGNED_AT).expect("fits"));
    headers.insert(
        "x-amz-date",
        HeaderValue::from_str(&amz_date).expect("ASCII"),
    );
    let parts = RequestParts {
        method: "POST",
        path: PATH,
        query: "",
        headers: &headers,
        body,
    };
    let authorization =
        sigv4::sign(&parts, ACCESS_KEY_ID, secret, "us-east-1").expect("signs the request");
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&authorization).expect("ASCII"),
    );
    headers
}

fn sigv4_verify(c: &mut Criterion) {
    let secret = Sigv4Secret::new(SECRET.to_owned());
    let now = UNIX_EPOCH + Duration::from_secs(SIGNED_AT);
    let mut group = c.benchmark_group("sigv4_verify_encrypt");
    for size in PLAINTEXT_SIZES {
        let body = encrypt_body(size);
        let headers = signed_headers(&body, &secret);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| {
                let parts = RequestParts {
                    method: "POST",
                    path: PATH,
                    query: "",
                    headers: &headers,
                    body,
                };
                sigv4::verify(&parts, |_| Some(&secret), &[], now).expect("verifies")
            });
        });
    }
    group.finish();
}

fn parse_encrypt_body(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_encrypt_body");
    for size in PLAINTEXT_SIZES {
        let body = encrypt_body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| {
                let request =
                    body::parse_request(black_box(body), Operation::Encrypt).expect("valid body");
                body::encrypt_inputs(&request).expect("valid inputs")
            });
        });
    }
    group.finish();
}

/// Builds a key store with one domain and one software key in `dir` and returns the domain
/// from its snapshot.
fn bench_domain(dir: &std::path::Path) -> Arc<DomainView> {
    let store = Store::open(&dir.join("keyhold.db")).expect("open store");
    let root = FileRootKey::create(&dir.join("root.key")).expect("root key");
    let mut key_store = KeyStore::new(store, Box::new(root));
    key_store
        .create_domain(&NewDomain {
            id: "bench".to_owned(),
            ..NewDomain::default()
        })
        .expect("domain");
    key_store
        .create_key(&NewKey::with_id("bench", "k1"))
        .expect("key");
    let snapshot = key_store.load_snapshot().expect("snapshot");
    snapshot
        .domain_by_prefix("/domains/bench")
        .expect("domain in snapshot")
        .clone()
}

fn encrypt_with_integrity_value(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let domain = bench_domain(dir.path());
    let aad = vec![0xa5; AAD_SIZE];
    let request = RequestContext {
        kms_key_arn: Some(KMS_KEY_ARN),
        principal_arn: Some("arn:aws:iam::111122223333:role/bench"),
        operation: Some("Encrypt"),
        ..RequestContext::default()
    };
    let mut group = c.benchmark_group("encrypt");
    for size in PLAINTEXT_SIZES {
        let plaintext = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        for integrity_value in [true, false] {
            let name = if integrity_value {
                "integrity_value"
            } else {
                "no_integrity_value"
            };
            let input = EncryptInput {
                key_id: "k1",
                request,
                plaintext: &plaintext,
                aad: Some(&aad),
                integrity_value,
            };
            group.bench_with_input(BenchmarkId::new(name, size), &input, |b, input| {
                b.iter(|| encrypt::encrypt(&domain, None, black_box(input)).expect("encrypts"));
            });
        }
    }
    group.finish();
}

fn encode_encrypt_response(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_encrypt_response");
    for size in PLAINTEXT_SIZES {
        let ciphertext = vec![0x3c; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(size),
            &ciphertext,
            |b, ciphertext| {
                b.iter(|| {
                    body::Base64Object::with_capacity(ciphertext.len() + 96)
                        .field("authenticationTag", &[0x11; 16])
                        .field("ciphertext", black_box(ciphertext))
                        .field("ciphertextMetadata", &[0x01, 0, 0, 0, 1])
                        .field("initializationVector", &[0x22; 12])
                        .field("ciphertextDataIntegrityValue", &[0x33; 32])
                        .finish()
                });
            },
        );
    }
    group.finish();
}

fn configure() -> Criterion {
    // Short runs keep the whole suite near a minute on a small machine; the confidence
    // intervals in the output show whether that was enough.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = hot_path;
    config = configure();
    targets = sigv4_verify, parse_encrypt_body, encrypt_with_integrity_value, encode_encrypt_response
}
criterion_main!(hot_path);
