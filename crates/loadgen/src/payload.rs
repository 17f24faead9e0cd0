//! Deterministic message payloads: every byte of message `seq` on connection `id` is a pure
//! function of `(id, seq, offset)`, so the echo is verified without keeping a copy of what was
//! sent and without any framing in the echo protocol.
//!
//! How: each message gets a 64-bit seed (`message_seed`), and its byte stream is the little-endian
//! expansion of the SplitMix64 sequence `mix(seed + (w + 1) * GOLDEN)` for word index `w`. That is
//! random access (any offset costs one mix), so a read that starts in the middle of a message needs
//! no state beyond the offset, and filling or checking costs about one multiply-xorshift per eight
//! bytes. Try it: `cargo test -p loadgen payload`.
//!
//! The load generator's worker uses only [`fill_message`] and [`verify_message`], which name a
//! byte range by `(connection, message, offset)`: a different payload scheme changes this file.

/// The SplitMix64 increment (2^64 / φ).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finalizer: a cheap bijective mix of 64 bits.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of message `seq` on connection `connection_id`.
#[inline]
pub fn message_seed(connection_id: u64, seq: u64) -> u64 {
    mix(mix(connection_id.wrapping_add(0x005E_ED0F_EC40)).wrapping_add(seq.wrapping_mul(GOLDEN)))
}

/// The 8 payload bytes at word index `word` (bytes `8*word .. 8*word+8`) of a message.
#[inline(always)]
fn word(seed: u64, word: u64) -> u64 {
    mix(seed.wrapping_add(word.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// The expected byte at `offset` of the message with `seed`.
#[inline]
pub fn byte_at(seed: u64, offset: u64) -> u8 {
    (word(seed, offset / 8) >> ((offset % 8) * 8)) as u8
}

/// Writes the payload bytes `offset .. offset + out.len()` of the message with `seed` into `out`.
pub fn fill(seed: u64, offset: u64, out: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while !pos.is_multiple_of(8) && i < out.len() {
        out[i] = byte_at(seed, pos);
        pos += 1;
        i += 1;
    }
    let mut chunks = out[i..].chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&word(seed, pos / 8).to_le_bytes());
        pos += 8;
    }
    for b in chunks.into_remainder() {
        *b = byte_at(seed, pos);
        pos += 1;
    }
}

/// Writes bytes `offset .. offset + out.len()` of message `seq` on connection `connection_id`.
#[inline]
pub fn fill_message(connection_id: u64, seq: u64, offset: u64, out: &mut [u8]) {
    fill(message_seed(connection_id, seq), offset, out);
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
    verify(message_seed(connection_id, seq), offset, data)
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

/// Checks that `data` equals the payload bytes `offset .. offset + data.len()` of the message
/// with `seed`; returns the first differing byte otherwise.
#[inline]
pub fn verify(seed: u64, offset: u64, data: &[u8]) -> Result<(), Mismatch> {
    let mut pos = offset;
    let mut i = 0;
    let check_byte = |pos: u64, got: u8| {
        let expected = byte_at(seed, pos);
        if expected == got {
            Ok(())
        } else {
            Err(Mismatch {
                offset: pos,
                expected,
                got,
            })
        }
    };
    while !pos.is_multiple_of(8) && i < data.len() {
        check_byte(pos, data[i])?;
        pos += 1;
        i += 1;
    }
    let mut chunks = data[i..].chunks_exact(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let got = u64::from_le_bytes(bytes);
        let expected = word(seed, pos / 8);
        if got != expected {
            let first = u64::from((expected ^ got).trailing_zeros() / 8);
            return Err(Mismatch {
                offset: pos + first,
                expected: (expected >> (first * 8)) as u8,
                got: (got >> (first * 8)) as u8,
            });
        }
        pos += 8;
    }
    for &b in chunks.remainder() {
        check_byte(pos, b)?;
        pos += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_verify_agree_at_every_alignment() {
        let seed = message_seed(7, 42);
        let mut whole = vec![0u8; 100];
        fill(seed, 0, &mut whole);
        for start in 0..20 {
            for len in 0..(100 - start) {
                let mut part = vec![0u8; len];
                fill(seed, start as u64, &mut part);
                assert_eq!(part, whole[start..start + len], "start {start} len {len}");
                assert_eq!(
                    verify(seed, start as u64, &whole[start..start + len]),
                    Ok(())
                );
            }
        }
    }

    #[test]
    fn verify_reports_the_first_wrong_byte() {
        let seed = message_seed(3, 9);
        let mut buf = vec![0u8; 64];
        fill(seed, 0, &mut buf);
        for bad in [0usize, 5, 8, 13, 63] {
            let mut copy = buf.clone();
            copy[bad] ^= 0x40;
            copy[63] = if bad == 63 { copy[63] } else { copy[63] ^ 1 };
            for start in [0usize, 1, 3] {
                if bad < start {
                    continue;
                }
                let err = verify(seed, start as u64, &copy[start..]).unwrap_err();
                assert_eq!(err.offset, bad as u64);
                assert_eq!(err.expected, buf[bad]);
                assert_eq!(err.got, copy[bad]);
            }
        }
    }

    #[test]
    fn payloads_differ_between_messages_and_connections() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        let mut c = [0u8; 32];
        fill(message_seed(1, 1), 0, &mut a);
        fill(message_seed(1, 2), 0, &mut b);
        fill(message_seed(2, 1), 0, &mut c);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
    }
}
