//! The TOML configuration: any text is a `Config` or a `ConfigError`, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = certgate::Config::parse(text);
});
