//! SigV4-signed requests built from per-operation templates, signed with Keyhold's signer.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{HeaderMap, Method, Request};
use keyhold::auth::Sigv4Secret;
use keyhold::auth::sigv4::{self, RequestParts};

/// The SigV4 credential and the values every request signs.
#[derive(Debug, Clone)]
pub(crate) struct Signer {
    /// Access key id.
    pub(crate) access_key_id: String,
    /// Secret access key.
    pub(crate) secret: Sigv4Secret,
    /// Credential scope region.
    pub(crate) region: String,
    /// Host header value.
    pub(crate) host: HeaderValue,
}

/// A request that is re-signed whenever its `X-Amz-Date` second changes.
///
/// The body and path never change, so within one second the signature is the same as signing
/// anew would give, and signing costs at most one SHA-256 of the body per second.
#[derive(Debug, Clone)]
pub(crate) struct RequestTemplate {
    path: String,
    body: Bytes,
    signed_at: Option<i64>,
    headers: HeaderMap,
}

impl RequestTemplate {
    /// Creates a template for a POST of `body` to `path`.
    pub(crate) fn new(path: String, body: Bytes) -> Self {
        Self {
            path,
            body,
            signed_at: None,
            headers: HeaderMap::new(),
        }
    }

    /// Returns the request path.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// Returns the request signed for `unix_secs`, signing again when the second changed.
    ///
    /// # Errors
    ///
    /// Returns a message when the signer rejects the request parts.
    pub(crate) fn request(
        &mut self,
        signer: &Signer,
        unix_secs: i64,
    ) -> Result<Request<Full<Bytes>>, String> {
        if self.signed_at != Some(unix_secs) {
            self.sign(signer, unix_secs)?;
        }
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self
            .path
            .parse()
            .map_err(|error| format!("invalid request path {:?}: {error}", self.path))?;
        *request.headers_mut() = self.headers.clone();
        Ok(request)
    }

    fn sign(&mut self, signer: &Signer, unix_secs: i64) -> Result<(), String> {
        let amz_date = sigv4::format_amz_date(unix_secs);
        let mut headers = HeaderMap::new();
        headers.insert(HOST, signer.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            "x-amz-date",
            HeaderValue::from_str(&amz_date).map_err(|error| error.to_string())?,
        );
        let parts = RequestParts {
            method: "POST",
            path: &self.path,
            query: "",
            headers: &headers,
            body: &self.body,
        };
        let authorization = sigv4::sign(
            &parts,
            &signer.access_key_id,
            &signer.secret,
            &signer.region,
        )
        .map_err(|error| format!("cannot sign the request to {}: {error}", self.path))?;
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&authorization).map_err(|error| error.to_string())?,
        );
        self.headers = headers;
        self.signed_at = Some(unix_secs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use http_body_util::BodyExt as _;

    use super::*;
    use crate::workload::{Operation, Payload, default_kms_key_arn, operation_path, request_body};

    const ACCESS_KEY_ID: &str = "KHBENCHTESTKEY234567ABCD";
    const SECRET: &str = "VU6W2byoiBrhDqNGbx703oL0syCAmhlQgwNUT123456";
    const SIGNED_AT: i64 = 1_778_889_600;

    fn signer() -> Signer {
        Signer {
            access_key_id: ACCESS_KEY_ID.to_owned(),
            secret: Sigv4Secret::new(SECRET.to_owned()),
            region: "eu-west-1".to_owned(),
            host: HeaderValue::from_static("localhost:8443"),
        }
    }

    fn payload() -> Payload {
        Payload {
            plaintext: vec![7; 32],
            aad: vec![1, 2, 3],
            integrity_value: true,
            kms_key_arn: default_kms_key_arn("eu-west-1"),
        }
    }

    async fn verify_request(request: Request<Full<Bytes>>, at: i64) -> Result<(), String> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let secret = Sigv4Secret::new(SECRET.to_owned());
        let now = UNIX_EPOCH + Duration::from_secs(u64::try_from(at).map_err(|e| e.to_string())?);
        sigv4::verify(
            &RequestParts {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: "",
                headers: &parts.headers,
                body: &body,
            },
            |id| (id == ACCESS_KEY_ID).then_some(&secret),
            &["eu-west-1".to_owned()],
            now,
        )
        .map(|_| ())
        .map_err(|error| error.to_string())
    }

    #[tokio::test]
    async fn signed_request_verifies() {
        let body = request_body(Operation::Encrypt, "r-1", &payload()).to_string();
        let path = operation_path("/domains/acme/kms/xks/v1", "k1", Operation::Encrypt);
        let mut template = RequestTemplate::new(path, Bytes::from(body));
        let request = template.request(&signer(), SIGNED_AT).expect("signs");
        assert_eq!(
            request.uri().path(),
            "/domains/acme/kms/xks/v1/keys/k1/encrypt"
        );
        let authorization = request.headers()[AUTHORIZATION].to_str().expect("ASCII");
        assert!(
            authorization.contains("SignedHeaders=content-type;host;x-amz-date"),
            "{authorization}"
        );
        assert_eq!(verify_request(request, SIGNED_AT).await, Ok(()));
    }

    #[tokio::test]
    async fn template_signs_again_next_second() {
        let body = request_body(Operation::Health, "r-2", &payload()).to_string();
        let mut template = RequestTemplate::new("/kms/xks/v1/health".to_owned(), Bytes::from(body));
        let first = template.request(&signer(), SIGNED_AT).expect("signs");
        let again = template.request(&signer(), SIGNED_AT).expect("signs");
        assert_eq!(first.headers(), again.headers());
        let later = template.request(&signer(), SIGNED_AT + 1).expect("signs");
        assert_ne!(first.headers()["x-amz-date"], later.headers()["x-amz-date"]);
        assert_eq!(verify_request(later, SIGNED_AT + 1).await, Ok(()));
    }

    #[tokio::test]
    async fn tampered_body_fails_verification() {
        let body = request_body(Operation::Metadata, "r-3", &payload()).to_string();
        let mut template =
            RequestTemplate::new("/kms/xks/v1/keys/k1/metadata".to_owned(), Bytes::from(body));
        let request = template.request(&signer(), SIGNED_AT).expect("signs");
        let (parts, _) = request.into_parts();
        let tampered = Request::from_parts(parts, Full::new(Bytes::from_static(b"{}")));
        let result = verify_request(tampered, SIGNED_AT).await;
        assert!(result.is_err_and(|message| message.contains("signature does not match")));
    }
}
