//! Shared by the BPF_PROG_TEST_RUN tests of the program.
#![allow(dead_code)] // each test binary uses its own subset
pub mod test_run;
pub mod tun;
