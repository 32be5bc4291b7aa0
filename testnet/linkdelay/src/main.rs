//! `vaultd-linkdelay`: the testnet's link latency. Run inside a validator's network namespace,
//! it takes every packet that namespace's iptables rule sends to NFQUEUE `--queue` and accepts
//! it after the delay of the link it came from (`schedule.rs`): `--delay-ms` unless `--from`
//! names the packet's IPv4 source. This machine's kernel has no netem, so the delay comes from
//! userspace (`scripts/testnet.sh` sets up the rule; see testnet/README.md).
//!
//! The rule takes packets as they arrive (PREROUTING), not as they leave: a packet held on its
//! way out still counts against its TCP socket's small-queue budget (about two packets), so
//! the socket's next segment would wait for it to leave and then wait its own delay, doubling
//! the latency of every message of more than one segment. A packet that crossed into another
//! namespace is no longer charged to its socket.
//!
//! Precision: a packet that arrives while packets are held is seen within `--tick-us`
//! (default 500 µs) and released within the same; the queue reads blocking when nothing is held.

mod schedule;

use std::{
    collections::VecDeque,
    io::{ErrorKind, Write},
    net::Ipv4Addr,
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
    /// A sender with a link of its own: `IP=DELAY_MS[:JITTER_MS]` (repeatable); its packets
    /// wait that instead of --delay-ms.
    #[arg(long = "from", value_parser = parse_from)]
    from: Vec<(Ipv4Addr, f64, f64)>,
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

/// `IP=DELAY_MS[:JITTER_MS]`.
fn parse_from(s: &str) -> Result<(Ipv4Addr, f64, f64), String> {
    let (ip, rest) = s
        .split_once('=')
        .ok_or("expected IP=DELAY_MS[:JITTER_MS]")?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{ip}: {e}"))?;
    let (d, j) = rest.split_once(':').unwrap_or((rest, "0"));
    let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{v}: {e}"));
    Ok((ip, num(d)?, num(j)?))
}

/// The IPv4 source of a packet (its first 20 bytes), if it is one.
fn source(payload: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = payload.get(12..16)?.try_into().ok()?;
    (payload.first()? >> 4 == 4).then(|| Ipv4Addr::from(b))
}

/// One link: whose packets, its delay line, what it holds.
struct Link {
    from: Option<Ipv4Addr>,
    schedule: schedule::Schedule,
    held: VecDeque<(Instant, nfq::Message)>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tick = Duration::from_micros(args.tick_us.clamp(50, 100_000));
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(args.queue);
    // The default link last; a packet goes to the first link naming its source.
    let mut links = Vec::new();
    for (k, (ip, d, j)) in args.from.iter().enumerate() {
        links.push(Link {
            from: Some(*ip),
            schedule: schedule::Schedule::new(
                ms(*d, "--from delay")?,
                ms(*j, "--from jitter")?,
                seed.rotate_left(k as u32 + 1),
            ),
            held: VecDeque::new(),
        });
    }
    let (delay, jitter) = (
        ms(args.delay_ms, "--delay-ms")?,
        ms(args.jitter_ms, "--jitter-ms")?,
    );
    links.push(Link {
        from: None,
        schedule: schedule::Schedule::new(delay, jitter, seed),
        held: VecDeque::new(),
    });

    let mut queue = Queue::open().context("opening the netfilter queue socket (root?)")?;
    queue
        .bind(args.queue)
        .with_context(|| format!("binding NFQUEUE {}", args.queue))?;
    // The IPv4 header only: the source picks the link; the rest is not copied to userspace.
    queue.set_copy_range(args.queue, if args.from.is_empty() { 0 } else { 20 })?;
    // Large segments as the stack made them: fewer, bigger packets to hold.
    queue.set_recv_gso(args.queue, true)?;
    // A full kernel queue drops (a congested link), it never lets packets skip the delay.
    queue.set_fail_open(args.queue, false)?;
    queue.set_queue_max_len(args.queue, 65_536)?;
    println!(
        "linkdelay: queue {} bound, delay {:?} ± {:?}, {} senders with links of their own",
        args.queue,
        delay,
        jitter,
        args.from.len()
    );
    std::io::stdout().flush()?;

    let mut dropped: u64 = 0;
    loop {
        let holding = links.iter().any(|l| !l.held.is_empty());
        // Read: blocking while nothing is held, else whatever has arrived.
        queue.set_nonblocking(holding);
        loop {
            match queue.recv() {
                Ok(mut msg) => {
                    let now = Instant::now();
                    let held: usize = links.iter().map(|l| l.held.len()).sum();
                    if held >= args.max_held {
                        dropped += 1;
                        if dropped.is_power_of_two() {
                            eprintln!("linkdelay: {dropped} packets dropped (over --max-held)");
                        }
                        msg.set_verdict(Verdict::Drop);
                        queue.verdict(msg)?;
                    } else {
                        let from = source(msg.get_payload());
                        let k = links
                            .iter()
                            .position(|l| l.from.is_none() || l.from == from)
                            .unwrap_or(links.len() - 1);
                        let link = &mut links[k];
                        link.held.push_back((link.schedule.release_at(now), msg));
                    }
                    queue.set_nonblocking(true);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading the queue"),
            }
        }
        // Release what is due (each link keeps its release times in arrival order).
        let now = Instant::now();
        for link in &mut links {
            while link.held.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, mut msg)) = link.held.pop_front() {
                    msg.set_verdict(Verdict::Accept);
                    queue.verdict(msg)?;
                }
            }
        }
        let next = links
            .iter()
            .filter_map(|l| l.held.front())
            .map(|(at, _)| *at)
            .min();
        if let Some(at) = next {
            std::thread::sleep(at.saturating_duration_since(Instant::now()).min(tick));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_link_is_ip_delay_and_optional_jitter() {
        let ip = Ipv4Addr::new(10, 200, 0, 12);
        assert_eq!(parse_from("10.200.0.12=200:20"), Ok((ip, 200.0, 20.0)));
        assert_eq!(parse_from("10.200.0.12=200"), Ok((ip, 200.0, 0.0)));
        assert!(parse_from("10.200.0.12").is_err());
        assert!(parse_from("host=1").is_err());
    }

    #[test]
    fn the_source_is_read_from_an_ipv4_header_only() {
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[12..16].copy_from_slice(&[10, 200, 0, 13]);
        assert_eq!(source(&h), Some(Ipv4Addr::new(10, 200, 0, 13)));
        h[0] = 0x60;
        assert_eq!(source(&h), None);
        assert_eq!(source(&h[..10]), None);
    }
}
