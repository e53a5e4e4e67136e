//! Any bytes as a JWKS document. Must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kit::security::jwt::fuzzing::parse_jwks(data);
});
