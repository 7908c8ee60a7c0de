//! `ciphertextMetadata` of a decrypt request: the base64 field, the size limit, Keyhold's
//! version encoding and the AAD framing that binds the metadata to the ciphertext.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyhold::api::body::{self, RequestBody};
use keyhold::crypto;
use keyhold::service;

use super::xks_body::check_error;

/// AAD of the request the metadata is framed with.
const AAD: &[u8] = b"aad";

/// Runs the target on the field's text as sent in the JSON body. The raw bytes are also
/// checked as decoded metadata, because base64 text cannot reach every byte sequence.
pub fn run(data: &[u8]) {
    check_decoded(data);
    if let Ok(text) = std::str::from_utf8(data) {
        check_field(text);
    }
}

fn check_field(text: &str) {
    let request = RequestBody {
        encryption_algorithm: Some("AES_GCM".to_owned()),
        ciphertext: Some(STANDARD.encode(b"ciphertext").into()),
        initialization_vector: Some(STANDARD.encode([0u8; 12])),
        authentication_tag: Some(STANDARD.encode([0u8; 16])),
        ciphertext_metadata: Some(text.to_owned()),
        ..RequestBody::default()
    };
    match body::decrypt_inputs(&request) {
        Ok(inputs) => check_decoded(inputs.metadata.as_deref().expect("metadata was sent")),
        Err(error) => check_error(&error),
    }
}

fn check_decoded(metadata: &[u8]) {
    if let Ok(version) = service::decode_metadata(Some(metadata)) {
        assert_eq!(
            service::encode_metadata(version).as_slice(),
            metadata,
            "metadata that decodes must be the encoding of its version"
        );
    }

    match crypto::frame_aad(AAD, metadata) {
        Ok(framed) => {
            let metadata_start = 2 + AAD.len() + 1;
            assert_eq!(framed.len(), metadata_start + metadata.len());
            assert_eq!(usize::from(framed[metadata_start - 1]), metadata.len());
            assert_eq!(&framed[metadata_start..], metadata);
        }
        Err(_) => assert!(metadata.len() > 255, "framing rejected short metadata"),
    }
}
