//! AFL++ entry point of the `backup_file` target; see `keyhold_fuzz::backup::run_file`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        keyhold_fuzz::backup::run_file(data);
    });
}
