//! AFL++ entry point of the `sigv4` target; see `keyhold_fuzz::sigv4::run`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        keyhold_fuzz::sigv4::run(data);
    });
}
