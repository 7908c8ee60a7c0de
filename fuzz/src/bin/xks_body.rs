//! AFL++ entry point of the `xks_body` target; see `keyhold_fuzz::xks_body::run`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        keyhold_fuzz::xks_body::run(data);
    });
}
