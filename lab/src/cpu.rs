//! Keeping a thread on one CPU. The data plane keeps per-CPU state (round-robin
//! cursors, counters, the flood guard's buckets), exact only for packets sent or run
//! from one CPU; and a benchmark times one CPU.
use anyhow::{Context, Result};
use nix::{
    sched::{CpuSet, sched_getcpu, sched_setaffinity},
    unistd::Pid,
};

/// Keeps the calling thread on `cpu`.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)
        .with_context(|| format!("CPU {cpu} is past what a CPU set holds"))?;
    // Pid 0: the calling thread.
    sched_setaffinity(Pid::from_raw(0), &set)
        .with_context(|| format!("cannot keep this thread on CPU {cpu}"))
}

/// Keeps the calling thread on the CPU it is running on, and returns that CPU.
pub fn stay_on_this_cpu() -> Result<usize> {
    let cpu = sched_getcpu().context("sched_getcpu")?;
    pin_to_cpu(cpu)?;
    Ok(cpu)
}
