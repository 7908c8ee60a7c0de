//! AES-256-GCM, the XKS AAD framing, the ciphertext data integrity value and random numbers.
//!
//! This module knows nothing about domains, keys or the wire format: it seals and opens bytes
//! under a [`DataKey`] and leaves the choice of key and the encoding of results to its callers.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Length in bytes of an AES-256 key.
pub const KEY_LEN: usize = 32;

/// Length in bytes of the initialization vectors Keyhold creates (96 bits).
pub const IV_LEN: usize = NONCE_LEN;

/// Length in bytes of the GCM authentication tag.
pub const TAG_LEN: usize = 16;

/// Largest AAD the framing can carry, because its length travels as a 16-bit integer.
pub const MAX_FRAMED_AAD_LEN: usize = u16::MAX as usize;

/// Largest `ciphertextMetadata` the framing can carry, because its length travels as one byte.
pub const MAX_FRAMED_METADATA_LEN: usize = u8::MAX as usize;

/// Failure of a cryptographic primitive.
///
/// Deliberately without detail: which part of a decryption failed must not reach a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The tag did not verify: the key, IV, AAD, ciphertext or tag is wrong.
    #[error("authentication tag did not verify")]
    TagMismatch,
    /// A length is outside what the primitive accepts.
    #[error("invalid input length")]
    InvalidLength,
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
}

/// An AES-256-GCM key ready for use.
///
/// The raw bytes are consumed when the key is built and kept only inside ring's key schedule,
/// so no copy of them lives in this value. `Debug` names the algorithm only.
pub struct DataKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(AES-256-GCM)")
    }
}

/// Output of [`DataKey::seal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The random IV that was used.
    pub iv: [u8; IV_LEN],
    /// The ciphertext, as long as the plaintext.
    pub ciphertext: Vec<u8>,
    /// The 16-byte authentication tag.
    pub tag: [u8; TAG_LEN],
}

impl DataKey {
    /// Builds a key from 32 raw bytes.
    ///
    /// # Errors
    ///
    /// Returns [`CryptoError::InvalidLength`] when `material` is not 32 bytes long.
    pub fn new(material: &[u8]) -> Result<Self, CryptoError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, material).map_err(|_| CryptoError::InvalidLength)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Encrypts `plaintext` under a fresh random IV with `aad` authenticated.
    ///
    /// # Errors
    ///
    /// Returns [`CryptoError::Random`] when no IV could be drawn.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, CryptoError> {
        let mut iv = [0u8; IV_LEN];
        fill_random(&mut iv)?;
        self.seal_with_iv(iv, plaintext, aad)
    }

    /// Encrypts `plaintext` under the given IV. Only tests and known-answer checks call this
    /// directly: an IV must never repeat under one key.
    pub(crate) fn seal_with_iv(
        &self,
        iv: [u8; IV_LEN],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Sealed, CryptoError> {
        let mut ciphertext = plaintext.to_vec();
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(aad),
                &mut ciphertext,
            )
            .map_err(|_| CryptoError::InvalidLength)?;
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag.as_ref());
        Ok(Sealed {
            iv,
            ciphertext,
            tag: tag_bytes,
        })
    }

    /// Decrypts and verifies, returning the plaintext in a buffer that is wiped on drop.
    ///
    /// # Errors
    ///
    /// Returns [`CryptoError::InvalidLength`] for an IV other than 12 bytes or a tag other
    /// than 16 bytes, and [`CryptoError::TagMismatch`] when authentication fails.
    pub fn open(
        &self,
        iv: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        aad: &[u8],
    ) -> Result<Wiped, CryptoError> {
        let nonce = Nonce::try_assume_unique_for_key(iv).map_err(|_| CryptoError::InvalidLength)?;
        if tag.len() != TAG_LEN {
            return Err(CryptoError::InvalidLength);
        }
        let mut buffer = Vec::with_capacity(ciphertext.len() + TAG_LEN);
        buffer.extend_from_slice(ciphertext);
        buffer.extend_from_slice(tag);
        let mut buffer = Wiped::new(buffer);
        let plaintext_len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buffer)
            .map_err(|_| CryptoError::TagMismatch)?
            .len();
        buffer.truncate(plaintext_len);
        Ok(buffer)
    }
}

/// Builds the AAD given to AES-GCM from the request's AAD and the `ciphertextMetadata`.
///
/// The framing is the one the XKS proxy API specification recommends:
/// `u16_be(len AAD) || AAD || u8(len metadata) || metadata`, where an absent part has length
/// zero. The length prefixes make the framing injective, so bytes cannot move between the AAD
/// and the metadata and still verify.
///
/// # Errors
///
/// Returns [`CryptoError::InvalidLength`] when the AAD is longer than 65,535 bytes or the
/// metadata longer than 255 bytes.
pub fn frame_aad(aad: &[u8], metadata: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let aad_len = u16::try_from(aad.len()).map_err(|_| CryptoError::InvalidLength)?;
    let metadata_len = u8::try_from(metadata.len()).map_err(|_| CryptoError::InvalidLength)?;
    let mut framed = Vec::with_capacity(3 + aad.len() + metadata.len());
    framed.extend_from_slice(&aad_len.to_be_bytes());
    framed.extend_from_slice(aad);
    framed.push(metadata_len);
    framed.extend_from_slice(metadata);
    Ok(framed)
}

/// Computes the XKS ciphertext data integrity value: SHA-256 over the concatenation of the
/// request AAD, `ciphertextMetadata`, IV, ciphertext and tag, with no length prefixes.
pub fn integrity_value(
    aad: &[u8],
    metadata: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [aad, metadata, iv, ciphertext, tag] {
        context.update(part);
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(context.finish().as_ref());
    digest
}

/// Fills `buffer` from the operating system's random number generator.
///
/// # Errors
///
/// Returns [`CryptoError::Random`] when the generator fails.
pub fn fill_random(buffer: &mut [u8]) -> Result<(), CryptoError> {
    SystemRandom::new()
        .fill(buffer)
        .map_err(|_| CryptoError::Random)
}

/// Draws a new random AES-256 key, returned in a buffer that is wiped on drop.
///
/// # Errors
///
/// Returns [`CryptoError::Random`] when the generator fails.
pub fn generate_key() -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    fill_random(key.as_mut())?;
    Ok(key)
}

/// Computes the SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    digest
}

/// Overwrites `bytes` with zeros in a way the compiler cannot skip.
///
/// Like `zeroize`, it writes through volatile stores, but 16 bytes at a time over the aligned
/// middle of the slice, so wiping a request body costs little next to handling it.
pub fn wipe(bytes: &mut [u8]) {
    use zeroize::Zeroize as _;
    let (head, middle, tail) = bytemuck::pod_align_to_mut::<u8, u128>(bytes);
    head.zeroize();
    middle.zeroize();
    tail.zeroize();
}

/// A byte buffer that is wiped with [`wipe`], spare capacity included, when dropped.
///
/// For request bodies and plaintexts, which are too large for the byte-at-a-time wipe of
/// `zeroize::Zeroizing` to be cheap. No access grows the buffer, so it never reallocates and
/// leaves an unwiped copy behind.
#[derive(Default, PartialEq, Eq)]
pub struct Wiped(Vec<u8>);

impl Wiped {
    /// Takes ownership of `bytes`; they are wiped when this value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Shortens the buffer to `len` bytes; the bytes cut off are wiped on drop with the rest.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }
}

/// Writable access cannot grow the buffer, so it never leaves a copy behind in freed memory.
impl std::ops::DerefMut for Wiped {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl std::ops::Deref for Wiped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Wiped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wiped({} bytes)", self.0.len())
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        let capacity = self.0.capacity();
        self.0.resize(capacity, 0);
        wipe(&mut self.0);
    }
}

/// Appends `bytes` to `out` as lower-case hex.
///
/// SigV4 and the audit chain hex-encode several digests per request; this writes them
/// without the per-character iterator of the `hex` crate.
pub fn push_hex(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

/// Returns `bytes` as lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(bytes, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    fn b64(text: &str) -> Vec<u8> {
        STANDARD.decode(text).expect("valid base64 in test vector")
    }

    #[test]
    fn wipe_clears_every_byte_at_any_alignment() {
        let mut buffer = [0xa5u8; 100];
        for start in 0..17 {
            buffer.fill(0xa5);
            wipe(&mut buffer[start..start + 70]);
            assert!(buffer[start..start + 70].iter().all(|&byte| byte == 0));
            assert!(buffer[..start].iter().all(|&byte| byte == 0xa5));
            assert!(buffer[start + 70..].iter().all(|&byte| byte == 0xa5));
        }
        let wiped = Wiped::new(b"secret".to_vec());
        assert_eq!(&*wiped, b"secret");
        assert_eq!(format!("{wiped:?}"), "Wiped(6 bytes)");
    }

    #[test]
    fn hex_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0u8..=255).collect();
        assert_eq!(to_hex(&bytes), hex::encode(&bytes));
        let mut out = "x".to_owned();
        push_hex(&[0x0a, 0xf0], &mut out);
        assert_eq!(out, "x0af0");
        assert_eq!(to_hex(&[]), "");
    }

    fn sequential_key() -> DataKey {
        let material: Vec<u8> = (0u8..32).collect();
        DataKey::new(&material).expect("32-byte key")
    }

    fn sequential_iv() -> [u8; IV_LEN] {
        let mut iv = [0u8; IV_LEN];
        for (index, byte) in iv.iter_mut().enumerate() {
            *byte = index as u8;
        }
        iv
    }

    #[test]
    fn integrity_value_matches_spec_example() {
        let value = integrity_value(
            b"project=nile,department=marketing",
            b"key_version=1",
            &b64("HMrlRw85cAJUd5Ax"),
            &b64("ghxkK1txeDNn3q8Y"),
            &b64("vBxN2ncH1oEkR8WVXpmyYQ=="),
        );
        assert_eq!(
            STANDARD.encode(value),
            "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="
        );
    }

    #[test]
    fn framed_seal_matches_known_answer() {
        let framed = frame_aad(b"project=nile,department=marketing", b"key_version=1")
            .expect("small inputs frame");
        let sealed = sequential_key()
            .seal_with_iv(sequential_iv(), b"Hello World!", &framed)
            .expect("seal");
        assert_eq!(STANDARD.encode(&sealed.ciphertext), "D2e6d6rFlXT/LfOq");
        assert_eq!(STANDARD.encode(sealed.tag), "z16Jpi+YEVrPfy7xOkRNVw==");
        let value = integrity_value(
            b"project=nile,department=marketing",
            b"key_version=1",
            &sealed.iv,
            &sealed.ciphertext,
            &sealed.tag,
        );
        assert_eq!(
            STANDARD.encode(value),
            "f3I7NWF4DGjk7+jfvjeSU5DvQJDKZ/RQztaBma/YHso="
        );
    }

    #[test]
    fn empty_parts_frame_to_three_zero_bytes() {
        assert_eq!(frame_aad(b"", b"").expect("empty frames"), vec![0, 0, 0]);
        let sealed = sequential_key()
            .seal_with_iv(sequential_iv(), b"Hello World!", &[0, 0, 0])
            .expect("seal");
        assert_eq!(STANDARD.encode(sealed.tag), "+DX8ZJOvQVMTeK7gwOAsdg==");
    }

    #[test]
    fn framing_separates_aad_from_metadata() {
        let moved = frame_aad(b"ab", b"").expect("frame");
        let split = frame_aad(b"a", b"b").expect("frame");
        assert_ne!(moved, split);
    }

    #[test]
    fn open_rejects_changed_aad() {
        let key = sequential_key();
        let sealed = key.seal(b"data key", b"context").expect("seal");
        let result = key.open(&sealed.iv, &sealed.ciphertext, &sealed.tag, b"contexT");
        assert_eq!(
            result.expect_err("changed AAD must fail"),
            CryptoError::TagMismatch
        );
        let plaintext = key
            .open(&sealed.iv, &sealed.ciphertext, &sealed.tag, b"context")
            .expect("original AAD opens");
        assert_eq!(&*plaintext, b"data key");
    }

    #[test]
    fn oversized_aad_cannot_be_framed() {
        let aad = vec![0u8; MAX_FRAMED_AAD_LEN + 1];
        assert_eq!(frame_aad(&aad, b""), Err(CryptoError::InvalidLength));
        assert!(frame_aad(&aad[1..], b"").is_ok());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn key() -> DataKey {
        DataKey::new(&[7u8; KEY_LEN]).expect("32-byte key")
    }

    proptest! {
        #[test]
        fn seal_then_open_returns_plaintext(
            plaintext in proptest::collection::vec(any::<u8>(), 0..5000),
            aad in proptest::collection::vec(any::<u8>(), 0..9000),
            metadata in proptest::collection::vec(any::<u8>(), 0..21),
        ) {
            let framed = frame_aad(&aad, &metadata).expect("sizes within the framing");
            let key = key();
            let sealed = key.seal(&plaintext, &framed).expect("seal");
            prop_assert_eq!(sealed.ciphertext.len(), plaintext.len());
            let opened = key
                .open(&sealed.iv, &sealed.ciphertext, &sealed.tag, &framed)
                .expect("open");
            prop_assert_eq!(&*opened, plaintext.as_slice());
        }

        #[test]
        fn framing_is_injective(
            first_aad in proptest::collection::vec(any::<u8>(), 0..64),
            first_metadata in proptest::collection::vec(any::<u8>(), 0..21),
            second_aad in proptest::collection::vec(any::<u8>(), 0..64),
            second_metadata in proptest::collection::vec(any::<u8>(), 0..21),
        ) {
            let first = frame_aad(&first_aad, &first_metadata).expect("frame");
            let second = frame_aad(&second_aad, &second_metadata).expect("frame");
            let same_inputs = first_aad == second_aad && first_metadata == second_metadata;
            prop_assert_eq!(first == second, same_inputs);
        }

        #[test]
        fn moving_bytes_between_aad_and_metadata_fails(
            aad in proptest::collection::vec(any::<u8>(), 1..64),
            metadata in proptest::collection::vec(any::<u8>(), 0..19),
        ) {
            let key = key();
            let sealed = key.seal(b"data key", &frame_aad(&aad, &metadata).expect("frame")).expect("seal");
            let (moved, rest) = aad.split_last().expect("non-empty AAD");
            let mut longer_metadata = vec![*moved];
            longer_metadata.extend_from_slice(&metadata);
            let shifted = frame_aad(rest, &longer_metadata).expect("frame");
            prop_assert!(key.open(&sealed.iv, &sealed.ciphertext, &sealed.tag, &shifted).is_err());
        }
    }
}
