//! AFL++ entry point of the `ciphertext_metadata` target; see `keyhold_fuzz::ciphertext_metadata::run`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        keyhold_fuzz::ciphertext_metadata::run(data);
    });
}
