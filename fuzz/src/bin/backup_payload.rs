//! AFL++ entry point of the `backup_payload` target; see `keyhold_fuzz::backup::run_payload`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        keyhold_fuzz::backup::run_payload(data);
    });
}
