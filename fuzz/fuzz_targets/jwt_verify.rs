//! Any bytes as an access token: the size/shape/`alg`/`kid` precheck, then signature
//! and claims verification against a fixed key. Must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kit::security::jwt::fuzzing::verify_token(data);
});
