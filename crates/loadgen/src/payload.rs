//! Deterministic message payloads that cost a copy, not a computation: every byte of message
//! `seq` on connection `id` is a pure function of `(id, seq, offset)`, so the echo is verified
//! without keeping a copy of what was sent and without any framing in the echo protocol.
//!
//! How: one table of [`TABLE_BYTES`] random bytes is generated once per process from a fixed seed
//! ([`TABLE_SEED`], SplitMix64), so runs and hosts agree. A message is cut into blocks of
//! [`BLOCK_BYTES`]; block `b` of message `seq` on connection `id` is the table's bytes from
//! `block_start(id, seq, b)`: a hash of the three reduced to one of the
//! `TABLE_BYTES − BLOCK_BYTES + 1` = 196,609 places where a whole block fits. So every byte is random access (one hash per block), and any run of
//! message bytes inside one block is one contiguous slice of the table ([`segment`]): the worker
//! writes it to the socket straight from the table (`writev`, no fill), and checks an echo with
//! one slice comparison (`memcmp`) per block, scanning bytes only to locate a mismatch. Blocks of
//! one message start at independent places, so a message longer than a block does not repeat
//! itself (a periodic pattern would hide an echo shifted by its period).
//!
//! What it detects (`crates/loadgen/README.md` has the same list; the tests below check each):
//! - a changed byte: always, located exactly;
//! - bytes from another message or connection, or a shifted echo (bytes lost, duplicated or
//!   reordered): a run of `k` such bytes passes only if it equals the expected bytes, which for
//!   two different table positions happens with probability 2^(−8k) (one byte: 1/256; a
//!   64-bit word: 2^−64);
//! - unless the two blocks start at the same table position: for any two blocks that happens
//!   with probability 1 / 196,609 ≈ 5.1 × 10^−6, and then a block of the one echoed in place of
//!   the other passes unnoticed.
//!
//! The table's size is a cache trade-off: a small message reads one random line of it, which
//! must not be a cache miss (with a 2 MiB table, a `perf` profile of 64-byte messages showed
//! the copy out of the table stalled on its first load, 4% of the loadgen's CPU), while more
//! start positions make collisions rarer. 256 KiB stays in a core's L2 cache beside the
//! receive buffer. `cargo bench -p loadgen --bench payload` prints the cost of a message's
//! copies and verification with tables from 64 KiB to 16 MiB. Try it: `cargo test -p loadgen
//! payload`.
//!
//! The load generator's worker uses only [`segment`], [`fill_message`] and [`verify_message`],
//! which name a byte range by `(connection, message, offset)`: a different payload scheme
//! changes this file.

use crate::buffer::PageAligned;
use std::sync::LazyLock;

/// Bytes in the pattern table (see the module doc for why 256 KiB).
pub const TABLE_BYTES: usize = 256 * 1024;
/// A message's bytes come from the table in blocks of this many, each from its own place.
pub const BLOCK_BYTES: usize = 64 * 1024;
/// The seed of the table (fixed: every run on every host sends the same bytes).
pub const TABLE_SEED: u64 = 0xEC40_1AB0_5EED_0001;

/// The SplitMix64 increment (2^64 / φ).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finalizer: a cheap bijective mix of 64 bits.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit key of message `seq` on connection `connection_id`.
#[inline]
fn message_key(connection_id: u64, seq: u64) -> u64 {
    mix(mix(connection_id.wrapping_add(0x005E_ED0F_EC40)).wrapping_add(seq.wrapping_mul(GOLDEN)))
}

/// The first byte where an echo differs from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// Offset of the byte within the message.
    pub offset: u64,
    /// The byte that was sent.
    pub expected: u8,
    /// The byte that came back.
    pub got: u8,
}

/// A pattern table and the rule that places message blocks in it. The worker uses the one of
/// [`pattern`]; other sizes exist for the cache benchmark and the tests.
#[derive(Debug)]
pub struct Pattern {
    table: PageAligned,
    block: usize,
    /// Positions where a whole block fits: `table.len() - block + 1`.
    starts: u64,
}

impl Pattern {
    /// A table of `table_bytes` random bytes from `seed`, cut into blocks of `block_bytes`.
    ///
    /// # Panics
    /// When `block_bytes` is 0 or larger than `table_bytes` (a programming error: the sizes are
    /// constants).
    pub fn new(table_bytes: usize, block_bytes: usize, seed: u64) -> Pattern {
        assert!(
            block_bytes > 0 && block_bytes <= table_bytes,
            "a block ({block_bytes} B) must fit the table ({table_bytes} B)"
        );
        let mut table = PageAligned::zeroed(table_bytes);
        for (w, chunk) in table.chunks_mut(8).enumerate() {
            let word = mix(seed.wrapping_add((w as u64).wrapping_add(1).wrapping_mul(GOLDEN)));
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
        Pattern {
            table,
            block: block_bytes,
            starts: (table_bytes - block_bytes + 1) as u64,
        }
    }

    /// The table's bytes.
    pub fn table(&self) -> &[u8] {
        &self.table
    }

    /// Bytes per block.
    pub fn block_bytes(&self) -> usize {
        self.block
    }

    /// Distinct places a block can start at: two blocks collide with probability 1 / this.
    pub fn start_positions(&self) -> u64 {
        self.starts
    }

    /// Where block `block` of message `seq` on connection `connection_id` starts in the table.
    #[inline]
    pub fn block_start(&self, connection_id: u64, seq: u64, block: u64) -> usize {
        let h = mix(message_key(connection_id, seq) ^ block.wrapping_mul(GOLDEN));
        // Lemire's multiply-shift: uniform over the positions without a division.
        ((u128::from(h) * u128::from(self.starts)) >> 64) as usize
    }

    /// The message bytes from `offset` on that lie in one piece in the table, at most `max`:
    /// they end at `max` or at the end of the block, whichever comes first.
    #[inline]
    pub fn segment(&self, connection_id: u64, seq: u64, offset: u64, max: usize) -> &[u8] {
        let block = self.block as u64;
        let within = (offset % block) as usize;
        let start = self.block_start(connection_id, seq, offset / block) + within;
        let len = (self.block - within).min(max);
        &self.table[start..start + len]
    }

    /// The byte at `offset` of message `seq` on connection `connection_id`.
    pub fn byte_at(&self, connection_id: u64, seq: u64, offset: u64) -> u8 {
        self.segment(connection_id, seq, offset, 1)[0]
    }

    /// Copies bytes `offset .. offset + out.len()` of the message into `out`.
    #[inline]
    pub fn fill(&self, connection_id: u64, seq: u64, offset: u64, out: &mut [u8]) {
        let mut pos = offset;
        let mut rest = out;
        while !rest.is_empty() {
            let src = self.segment(connection_id, seq, pos, rest.len());
            let (head, tail) = rest.split_at_mut(src.len());
            head.copy_from_slice(src);
            pos += src.len() as u64;
            rest = tail;
        }
    }

    /// Checks that `data` equals bytes `offset .. offset + data.len()` of the message; returns
    /// the first differing byte otherwise. One slice comparison per block touched.
    #[inline]
    pub fn verify(
        &self,
        connection_id: u64,
        seq: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Mismatch> {
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let expected = self.segment(connection_id, seq, pos, rest.len());
            let (got, tail) = rest.split_at(expected.len());
            if got != expected {
                return Err(locate(pos, expected, got));
            }
            pos += expected.len() as u64;
            rest = tail;
        }
        Ok(())
    }
}

/// The first differing byte of two slices known to differ; `pos` is the offset of their first.
#[cold]
#[inline(never)]
fn locate(pos: u64, expected: &[u8], got: &[u8]) -> Mismatch {
    let i = expected
        .iter()
        .zip(got)
        .position(|(e, g)| e != g)
        .unwrap_or(0);
    Mismatch {
        offset: pos + i as u64,
        expected: expected[i],
        got: got[i],
    }
}

static PATTERN: LazyLock<Pattern> =
    LazyLock::new(|| Pattern::new(TABLE_BYTES, BLOCK_BYTES, TABLE_SEED));

/// The pattern every payload comes from ([`TABLE_BYTES`], [`BLOCK_BYTES`], [`TABLE_SEED`]),
/// generated on first use.
#[inline]
pub fn pattern() -> &'static Pattern {
    &PATTERN
}

/// The bytes of message `seq` on connection `connection_id` from `offset` on that lie in one
/// piece in the table (at most `max`): what the worker hands to `writev`.
#[inline]
pub fn segment(connection_id: u64, seq: u64, offset: u64, max: usize) -> &'static [u8] {
    pattern().segment(connection_id, seq, offset, max)
}

/// Writes bytes `offset .. offset + out.len()` of message `seq` on connection `connection_id`.
#[inline]
pub fn fill_message(connection_id: u64, seq: u64, offset: u64, out: &mut [u8]) {
    pattern().fill(connection_id, seq, offset, out);
}

/// Checks that `data` equals bytes `offset .. offset + data.len()` of message `seq` on connection
/// `connection_id`; returns the first differing byte otherwise.
#[inline]
pub fn verify_message(
    connection_id: u64,
    seq: u64,
    offset: u64,
    data: &[u8],
) -> Result<(), Mismatch> {
    pattern().verify(connection_id, seq, offset, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A message of `len` bytes from offset 0.
    fn message(connection: u64, seq: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        fill_message(connection, seq, 0, &mut out);
        out
    }

    /// The first offset where `got` differs from the message, by a byte scan (the oracle).
    fn first_difference(connection: u64, seq: u64, got: &[u8]) -> Option<u64> {
        (0..got.len() as u64).find(|&o| pattern().byte_at(connection, seq, o) != got[o as usize])
    }

    #[test]
    fn the_table_is_fixed_by_its_seed() {
        let a = Pattern::new(4096, 1024, TABLE_SEED);
        let b = Pattern::new(4096, 1024, TABLE_SEED);
        let c = Pattern::new(4096, 1024, TABLE_SEED + 1);
        assert_eq!(a.table(), b.table());
        assert_ne!(a.table(), c.table());
        // Its first word, so that a change of generator is a deliberate one.
        assert_eq!(
            pattern().table()[..8],
            mix(TABLE_SEED.wrapping_add(GOLDEN)).to_le_bytes()
        );
        assert_eq!(pattern().table().len(), TABLE_BYTES);
        assert_eq!(
            pattern().start_positions(),
            (TABLE_BYTES - BLOCK_BYTES + 1) as u64
        );
        // The figure the module doc and the README state.
        assert_eq!(pattern().start_positions(), 196_609);
    }

    #[test]
    fn fill_segment_and_verify_agree_at_every_offset_and_across_blocks() {
        // Three blocks and a half: offsets straddle every block boundary.
        let len = BLOCK_BYTES * 3 + BLOCK_BYTES / 2;
        let whole = message(7, 42, len);
        for o in [0usize, 1, 8, 65_535, 65_536, 65_537, 131_000, len - 1] {
            assert_eq!(pattern().byte_at(7, 42, o as u64), whole[o], "offset {o}");
        }
        for (start, part_len) in [
            (0, len),
            (3, 100),
            (65_530, 20),
            (65_536, 70_000),
            (1, len - 1),
        ] {
            let mut part = vec![0u8; part_len];
            fill_message(7, 42, start as u64, &mut part);
            assert_eq!(part, whole[start..start + part_len], "start {start}");
            assert_eq!(verify_message(7, 42, start as u64, &part), Ok(()));
            // Segments stop at block ends and join up to the same bytes.
            let mut joined = Vec::new();
            let mut pos = start as u64;
            while joined.len() < part_len {
                let seg = segment(7, 42, pos, part_len - joined.len());
                assert!(!seg.is_empty());
                assert!((pos % BLOCK_BYTES as u64) as usize + seg.len() <= BLOCK_BYTES);
                joined.extend_from_slice(seg);
                pos += seg.len() as u64;
            }
            assert_eq!(joined, part);
        }
    }

    #[test]
    fn a_changed_byte_is_always_found_at_its_offset() {
        let len = BLOCK_BYTES + 300;
        let sent = message(3, 9, len);
        // Every offset of the first 300 bytes and around the block boundary, every bit.
        let offsets = (0..300).chain(BLOCK_BYTES - 150..BLOCK_BYTES + 150);
        let mut echo = sent.clone();
        for bad in offsets {
            for bit in 0..8 {
                echo[bad] ^= 1 << bit;
                // Read from any earlier point, in one piece.
                for start in [0, bad / 2, bad] {
                    let err = verify_message(3, 9, start as u64, &echo[start..]).unwrap_err();
                    assert_eq!(
                        err,
                        Mismatch {
                            offset: bad as u64,
                            expected: sent[bad],
                            got: sent[bad] ^ (1 << bit),
                        }
                    );
                }
                echo[bad] ^= 1 << bit;
            }
        }
    }

    #[test]
    fn a_byte_from_the_neighbouring_message_passes_only_when_equal_about_1_in_256() {
        // Message s's echo has one byte replaced by the byte at the same offset of message s+1.
        let (len, messages) = (256usize, 400u64);
        let mut undetected = 0u64;
        let mut cases = 0u64;
        for seq in 0..messages {
            let sent = message(11, seq, len);
            let next = message(11, seq + 1, len);
            for o in 0..len {
                let mut echo = sent.clone();
                echo[o] = next[o];
                cases += 1;
                match verify_message(11, seq, 0, &echo) {
                    Ok(()) => {
                        assert_eq!(sent[o], next[o], "a different byte passed");
                        undetected += 1;
                    }
                    Err(m) => assert_eq!((m.offset, m.got), (o as u64, next[o])),
                }
            }
        }
        // 102,400 cases: 400 expected at 1/256 (σ ≈ 20).
        let expected = cases as f64 / 256.0;
        assert!(
            (undetected as f64 - expected).abs() < expected * 0.25,
            "{undetected} of {cases} passed, expected about {expected:.0}"
        );
    }

    #[test]
    fn a_run_of_bytes_from_another_connection_is_found_at_its_first_wrong_byte() {
        // A chunk of message (c, s) swapped for the same chunk of (c + 1, s) (an echo crossed
        // between connections). Runs of 8 bytes or more never pass (2^-64 each).
        let len = 2 * BLOCK_BYTES;
        for c in 0..40u64 {
            let sent = message(c, 5, len);
            let other = message(c + 1, 5, len);
            for (at, run) in [
                (0usize, 8usize),
                (100, 64),
                (BLOCK_BYTES - 4, 8),
                (9_000, 4096),
            ] {
                let mut echo = sent.clone();
                echo[at..at + run].copy_from_slice(&other[at..at + run]);
                let err = verify_message(c, 5, 0, &echo).unwrap_err();
                let first = first_difference(c, 5, &echo).unwrap();
                assert_eq!(err.offset, first);
                assert!((at as u64..(at + run) as u64).contains(&first));
                assert_eq!(err.got, other[first as usize]);
            }
        }
    }

    #[test]
    fn a_shifted_echo_is_found_where_the_shift_begins() {
        // A byte lost or duplicated at `at`: the rest of the echo is shifted by one. Also a
        // whole block repeated (shift by BLOCK_BYTES), which a table repeating every block
        // would miss.
        let len = 3 * BLOCK_BYTES;
        for seq in 0..20u64 {
            let sent = message(2, seq, len);
            for at in [
                0usize,
                1,
                777,
                BLOCK_BYTES - 1,
                BLOCK_BYTES,
                2 * BLOCK_BYTES + 5,
            ] {
                let mut lost = sent.clone();
                lost.remove(at);
                let mut doubled = sent.clone();
                doubled.insert(at, sent[at]);
                doubled.truncate(len);
                for echo in [&lost, &doubled] {
                    let err = verify_message(2, seq, 0, echo).unwrap_err();
                    let first = first_difference(2, seq, echo).unwrap();
                    assert_eq!(err.offset, first);
                    // Equal neighbours delay it by a byte now and then, never far.
                    assert!(first >= at as u64 && first < at as u64 + 8, "{at} {first}");
                }
            }
            let mut repeated = sent.clone();
            repeated.copy_within(0..BLOCK_BYTES, BLOCK_BYTES);
            let err = verify_message(2, seq, 0, &repeated).unwrap_err();
            assert!(err.offset >= BLOCK_BYTES as u64 && err.offset < BLOCK_BYTES as u64 + 8);
        }
    }

    #[test]
    fn block_starts_collide_about_once_per_start_positions() {
        // 10,000 messages of one connection: C(10000, 2) ≈ 50 million pairs, so about
        // 5.0e7 / 196,609 ≈ 254 colliding pairs are expected (σ ≈ 16).
        let n = 10_000u64;
        let mut seen: HashMap<usize, Vec<u64>> = HashMap::new();
        for seq in 0..n {
            seen.entry(pattern().block_start(1, seq, 0))
                .or_default()
                .push(seq);
        }
        let pairs: usize = seen.values().map(|v| v.len() * (v.len() - 1) / 2).sum();
        let expected = (n * (n - 1) / 2) as f64 / pattern().start_positions() as f64;
        assert!(
            (pairs as f64 - expected).abs() < expected * 0.25,
            "{pairs} colliding pairs, expected about {expected:.1}"
        );
        // The blind spot, shown: a message echoed in place of another that starts at the same
        // place passes (every byte is the same).
        let (a, b) = seen
            .values()
            .find(|v| v.len() > 1)
            .map(|v| (v[0], v[1]))
            .expect("some pair collides");
        assert_eq!(verify_message(1, a, 0, &message(1, b, 1000)), Ok(()));
        // Its neighbour does not.
        assert!(verify_message(1, a, 0, &message(1, a + 1, 1000)).is_err());
    }

    #[test]
    fn blocks_of_one_message_start_at_independent_places() {
        let starts: Vec<usize> = (0..16).map(|b| pattern().block_start(9, 3, b)).collect();
        let mut distinct = starts.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), starts.len(), "{starts:?}");
        assert!(starts.iter().all(|&s| s + BLOCK_BYTES <= TABLE_BYTES));
        // The table itself starts on a page (see `crate::buffer`).
        assert_eq!(pattern().table().as_ptr() as usize % 4096, 0);
    }
}
