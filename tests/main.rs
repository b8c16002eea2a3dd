//! Integration tests: one binary, real sockets on 127.0.0.1, real processes
//! of our binaries and of Python fedmsg 1.1.7.

mod util;

mod bus;
mod canonical;
mod cli;
mod config;
mod crypto;
mod hub;
mod interop;
mod pki;
mod reliability;
mod signed;
mod tools;
