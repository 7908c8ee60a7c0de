//! AFL++ entry point of the `config` target; see `keyhold_fuzz::config::run`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        keyhold_fuzz::config::run(data);
    });
}
