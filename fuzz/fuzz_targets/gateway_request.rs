//! Any bytes as a request head and body: path checks, routing, the route's access rule,
//! the bearer precheck and the JSON body checks of the default route table. Must never
//! panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gateway::edge::fuzzing::request(data);
});
