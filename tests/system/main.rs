//! Whole-system tests: start the real `flotilla` binary and talk HTTP to the gateway.

mod chaos;
mod chaos_run;
mod dashboard;
mod dns;
mod etcd;
mod fleet;
mod harness;
mod identity;
mod load;
mod mtls;
mod saga;
mod up;
