//! XKS request bodies: JSON parsing and the per-operation checks of every field, and the
//! error the client would receive.

use keyhold::api::body::{self, MAX_AAD_LEN, MAX_DATA_LEN, MAX_METADATA_LEN, RequestBody};
use keyhold::api::error::XksError;
use keyhold::api::route::Operation;

/// Longest `errorMessage` the server sends, in characters.
const MAX_ERROR_MESSAGE_LEN: usize = 511;

const OPERATIONS: [Operation; 4] = [
    Operation::Health,
    Operation::KeyMetadata,
    Operation::Encrypt,
    Operation::Decrypt,
];

/// Parses a body as every operation would; returns the operations it is valid for.
pub fn valid_operations(data: &[u8]) -> Vec<Operation> {
    OPERATIONS
        .into_iter()
        .filter(|&operation| check(data, operation))
        .collect()
}

/// Runs the target on one request body.
pub fn run(data: &[u8]) {
    for operation in OPERATIONS {
        check(data, operation);
    }
}

/// Parses and checks `data` as a request of `operation`; returns whether it is valid.
fn check(data: &[u8], operation: Operation) -> bool {
    let request = match body::parse_request(data, operation) {
        Ok(request) => request,
        Err(error) => {
            check_error(&error);
            return false;
        }
    };
    let checked = match operation {
        Operation::Encrypt => check_encrypt(&request),
        Operation::Decrypt => check_decrypt(&request),
        Operation::Health | Operation::KeyMetadata => Ok(()),
    };
    match checked {
        Ok(()) => true,
        Err(error) => {
            check_error(&error);
            false
        }
    }
}

fn check_encrypt(request: &RequestBody<'_>) -> Result<(), XksError> {
    let inputs = body::encrypt_inputs(request)?;
    assert!(
        inputs.data.len() <= MAX_DATA_LEN,
        "plaintext over the limit"
    );
    check_aad(inputs.aad.as_deref());
    Ok(())
}

fn check_decrypt(request: &RequestBody<'_>) -> Result<(), XksError> {
    let inputs = body::decrypt_inputs(request)?;
    assert!(
        inputs.data.len() <= MAX_DATA_LEN,
        "ciphertext over the limit"
    );
    assert!(
        inputs.iv.len() == 12 || inputs.iv.len() == 16,
        "IV of {} bytes accepted",
        inputs.iv.len()
    );
    assert_eq!(inputs.tag.len(), 16, "tag length");
    let metadata_len = inputs.metadata.as_ref().map_or(0, Vec::len);
    assert!(
        metadata_len <= MAX_METADATA_LEN,
        "ciphertextMetadata over the limit"
    );
    check_aad(inputs.aad.as_deref());
    Ok(())
}

fn check_aad(aad: Option<&[u8]>) {
    let aad_len = aad.map_or(0, <[u8]>::len);
    assert!(aad_len <= MAX_AAD_LEN, "AAD over the limit");
}

/// Checks an error the way a client sees it: a printable ASCII message of bounded length, in
/// a JSON body that carries the name and the message unchanged.
pub fn check_error(error: &XksError) {
    let message = error.message();
    assert!(
        message.len() <= MAX_ERROR_MESSAGE_LEN,
        "error message too long"
    );
    assert!(
        message.bytes().all(|byte| (b' '..=b'~').contains(&byte)),
        "error message is not printable ASCII: {message:?}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&error.to_json()).expect("error body is JSON");
    assert_eq!(json["errorName"], error.name().as_str());
    assert_eq!(json["errorMessage"], message);
}
