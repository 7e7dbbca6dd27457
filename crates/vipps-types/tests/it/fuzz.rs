//! The fuzz targets of `fuzz/` (cargo-fuzz, nightly) as a bounded random-input test on stable: each target gets
//! its seeds and `VIPPS_FUZZ_ITERATIONS` (default 5,000) inputs made from them by a seeded generator (byte flips,
//! insertions, deletions, splices of two seeds, random bytes). A failure names the target and the input.

#[path = "../../../../fuzz/src/lib.rs"]
#[allow(dead_code, unreachable_pub)]
mod targets;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutated input from the seeds.
fn mutate(rng: &mut Rng, seeds: &[&[u8]]) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(v.len() + 1);
                let interesting = [
                    b'"', b'{', b'}', b',', b':', b'0', b'-', b'\\', 0, 0xff, b' ', b'\n',
                ];
                v.insert(i, interesting[rng.below(interesting.len())]);
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = rng.below(v.len() - i) + 1;
                v.drain(i..i + n.min(8));
            }
            3 => {
                let other = seeds[rng.below(seeds.len())];
                let cut = rng.below(v.len() + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            4 => {
                let n = rng.below(16);
                v = (0..n).map(|_| rng.next() as u8).collect();
            }
            _ => {
                let i = rng.below(v.len() + 1);
                v.truncate(i);
            }
        }
    }
    v
}

#[test]
fn fuzz_targets_hold_on_mutated_inputs() {
    let n: usize = std::env::var("VIPPS_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (name, run) in targets::TARGETS {
        let seeds = targets::SEEDS
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
            .expect("every target has seeds");
        for s in seeds {
            run(s);
        }
        for _ in 0..n {
            let input = mutate(&mut rng, seeds);
            let caught = std::panic::catch_unwind(|| run(&input));
            assert!(
                caught.is_ok(),
                "fuzz target `{name}` failed on {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}
