//! The geo table's costs: decoding the built-in snapshot, its memory, and a lookup.
//!
//! Run it on demand (never in CI):
//!
//! ```text
//! export CARGO_TARGET_DIR=/root/.cache/netmeter/target
//! cargo bench -p netmeter-attributor --bench geo
//! ```
//!
//! - decode: `GeoTable::decode_builtin()` (what the first `GeoTable::builtin()` does), 5
//!   times, the median;
//! - memory: the bytes the decoded table holds (a counting allocator: live bytes after the
//!   decode, and the peak during it);
//! - lookup: 1M addresses from a fixed seed, 70% IPv4 anywhere (~14% of them special-purpose,
//!   answered without a search), 30% IPv6 in the regional registries' blocks; ns per lookup
//!   over the whole set, 5 rounds, the median; the same for each family alone, and for 10,000
//!   of the addresses looked up 100 times each (a hot set, as a cluster's remote addresses).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netmeter_attributor::geo::GeoTable;

/// The system allocator, counting the bytes held and their peak.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let held = HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(held, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            let held = HELD.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            PEAK.fetch_max(held, Ordering::Relaxed);
        } else {
            HELD.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ROUNDS: usize = 5;
const ADDRESSES: usize = 1_000_000;

fn main() {
    let mut decodes = Vec::new();
    let mut memory = (0, 0);
    for _ in 0..ROUNDS {
        let before = HELD.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let started = Instant::now();
        let table = black_box(GeoTable::decode_builtin());
        decodes.push(started.elapsed());
        memory = (
            HELD.load(Ordering::Relaxed) - before,
            PEAK.load(Ordering::Relaxed) - before,
        );
        drop(table);
    }
    println!(
        "decode the built-in snapshot: median {:.1?} of {ROUNDS} ({})",
        median(&mut decodes),
        list(&decodes)
    );
    println!(
        "memory of the decoded table: {:.1} MB held, {:.1} MB peak while decoding",
        memory.0 as f64 / 1e6,
        memory.1 as f64 / 1e6
    );

    let table = GeoTable::builtin();
    let mix = addresses();
    // A hot set, as a cluster's remote addresses are: 10,000 of them, in random order.
    let hot: Vec<IpAddr> = (0..ADDRESSES).map(|i| mix[i * 7919 % 10_000]).collect();
    for (name, addresses) in [
        ("mix", mix.clone()),
        ("hot 10k of the mix", hot),
        (
            "IPv4",
            mix.iter().copied().filter(IpAddr::is_ipv4).collect(),
        ),
        (
            "IPv6",
            mix.iter().copied().filter(IpAddr::is_ipv6).collect(),
        ),
    ] {
        let known = addresses
            .iter()
            .filter(|&&a| !table.lookup(a).country.is_empty())
            .count();
        let mut lookups = Vec::new();
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let mut asns = 0u64;
            for &address in &addresses {
                let label = black_box(table.lookup(black_box(address)));
                asns = asns.wrapping_add(u64::from(label.asn));
            }
            black_box(asns);
            lookups.push(started.elapsed() / addresses.len() as u32);
        }
        println!(
            "lookup, {name}: median {:.1?} of {ROUNDS} ({}), {} addresses, {:.0}% with a country",
            median(&mut lookups),
            list(&lookups),
            addresses.len(),
            100.0 * known as f64 / addresses.len() as f64
        );
    }
}

/// The benchmark's addresses, from a fixed seed.
fn addresses() -> Vec<IpAddr> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // The regional registries' main IPv6 blocks: 2001::/16, 2400::/12 (APNIC), 2600::/12
    // (ARIN), 2800::/12 (LACNIC), 2a00::/12 (RIPE NCC), 2c00::/12 (AFRINIC).
    const V6_BLOCKS: [(u128, u32); 6] = [
        (0x2001 << 112, 16),
        (0x2400 << 112, 12),
        (0x2600 << 112, 12),
        (0x2800 << 112, 12),
        (0x2a00 << 112, 12),
        (0x2c00 << 112, 12),
    ];
    (0..ADDRESSES)
        .map(|_| {
            if random() % 10 < 7 {
                IpAddr::V4(Ipv4Addr::from(random() as u32))
            } else {
                let (block, len) = V6_BLOCKS[random() as usize % V6_BLOCKS.len()];
                let rest = (u128::from(random()) << 64 | u128::from(random())) >> len;
                IpAddr::V6(Ipv6Addr::from(block | rest))
            }
        })
        .collect()
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn list(times: &[Duration]) -> String {
    times
        .iter()
        .map(|t| format!("{t:.1?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
