//! `vaultd-linkdelay`: the testnet's link latency. Run inside a validator's network namespace,
//! it takes every packet that namespace's iptables rule sends to NFQUEUE `--queue` and accepts
//! it after the link's delay (`schedule.rs`). This machine's kernel has no netem, so the delay
//! comes from userspace (`scripts/testnet.sh` sets up the rule; see testnet/README.md).
//!
//! Precision: a packet that arrives while packets are held is seen within `--tick-us`
//! (default 500 µs) and released within the same; the queue reads blocking when nothing is held.

mod schedule;

use std::{
    collections::VecDeque,
    io::{ErrorKind, Write},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use clap::Parser;
use nfq::{Queue, Verdict};

#[derive(Parser)]
#[command(about = "Hold each packet of an NFQUEUE for a link's delay, then accept it")]
struct Args {
    /// The NFQUEUE number the namespace's rule sends packets to.
    #[arg(long)]
    queue: u16,
    /// One-way delay, milliseconds.
    #[arg(long)]
    delay_ms: f64,
    /// Jitter, milliseconds: each packet's delay is drawn uniformly from delay ± jitter.
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// How often the queue is read while packets are held, microseconds.
    #[arg(long, default_value_t = 500)]
    tick_us: u64,
    /// Packets held at most; past it a packet is dropped, as a full router buffer would.
    #[arg(long, default_value_t = 65_536)]
    max_held: usize,
}

fn ms(v: f64, what: &str) -> anyhow::Result<Duration> {
    if !(0.0..=60_000.0).contains(&v) {
        bail!("{what} must be between 0 and 60000 ms, not {v}");
    }
    Ok(Duration::from_secs_f64(v / 1000.0))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let delay = ms(args.delay_ms, "--delay-ms")?;
    let jitter = ms(args.jitter_ms, "--jitter-ms")?;
    let tick = Duration::from_micros(args.tick_us.clamp(50, 100_000));
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(args.queue);
    let mut schedule = schedule::Schedule::new(delay, jitter, seed);

    let mut queue = Queue::open().context("opening the netfilter queue socket (root?)")?;
    queue
        .bind(args.queue)
        .with_context(|| format!("binding NFQUEUE {}", args.queue))?;
    // Metadata only: the payload is not looked at, so it is not copied to userspace.
    queue.set_copy_range(args.queue, 0)?;
    // Large segments as the stack made them: fewer, bigger packets to hold.
    queue.set_recv_gso(args.queue, true)?;
    // A full kernel queue drops (a congested link), it never lets packets skip the delay.
    queue.set_fail_open(args.queue, false)?;
    queue.set_queue_max_len(args.queue, 65_536)?;
    println!(
        "linkdelay: queue {} bound, delay {:?} ± {:?}",
        args.queue, delay, jitter
    );
    std::io::stdout().flush()?;

    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut dropped: u64 = 0;
    loop {
        // Read: blocking while nothing is held, else whatever has arrived.
        queue.set_nonblocking(!held.is_empty());
        loop {
            match queue.recv() {
                Ok(mut msg) => {
                    let now = Instant::now();
                    if held.len() >= args.max_held {
                        dropped += 1;
                        if dropped.is_power_of_two() {
                            eprintln!("linkdelay: {dropped} packets dropped (over --max-held)");
                        }
                        msg.set_verdict(Verdict::Drop);
                        queue.verdict(msg)?;
                    } else {
                        held.push_back((schedule.release_at(now), msg));
                    }
                    queue.set_nonblocking(true);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading the queue"),
            }
        }
        // Release what is due (the schedule keeps release times in arrival order).
        let now = Instant::now();
        while held.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, mut msg)) = held.pop_front() {
                msg.set_verdict(Verdict::Accept);
                queue.verdict(msg)?;
            }
        }
        if let Some((at, _)) = held.front() {
            std::thread::sleep(at.saturating_duration_since(Instant::now()).min(tick));
        }
    }
}
