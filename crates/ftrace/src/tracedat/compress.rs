//! Decompression of trace.dat v7 blocks (trace-cmd lib/trace-cmd/trace-compress.c
//! and its zstd/zlib back ends). Every block declares its uncompressed size;
//! we cap it, but the declaration is untrusted: the output grows as bytes
//! come out (doubling from 64 KiB, never past the declared size plus one
//! byte, each step with `try_reserve_exact`), so a block that lies costs
//! what it really inflates to, not what it claims. (flate2's Rust back end
//! zero-fills all spare capacity before each call, so reserving the declared
//! size up front made a one-byte flip cost 512 MiB of resident memory.) The
//! declared size must come out exactly.

use crate::budget::Reservation;
use crate::{Error, Result};

/// Largest uncompressed block we accept. trace-cmd's chunks are a few pages
/// and its metadata sections a few MB (kallsyms ~5 MB); 512 MiB leaves room
/// without letting a forged size exhaust memory.
pub const MAX_BLOCK: u32 = 512 << 20;

/// A compression algorithm named in the v7 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    None,
    Zstd,
    Zlib,
    /// Named in the header but not supported; an error if a compressed block
    /// is met.
    Unknown,
}

impl Codec {
    pub fn from_name(name: &str) -> Codec {
        match name {
            "none" | "" => Codec::None,
            "zstd" => Codec::Zstd,
            "zlib" => Codec::Zlib,
            _ => Codec::Unknown,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Zstd => "zstd",
            Codec::Zlib => "zlib",
            Codec::Unknown => "unknown",
        }
    }
}

/// First output step: a trace-cmd chunk (10 pages, ~40 KiB) fits in one.
const FIRST_STEP: usize = 64 << 10;

/// Blocks declaring at most this much are inflated in one call into a buffer
/// of the declared size (the hot path: every CPU chunk, ~40-128 KiB); a lie
/// there costs at most this much.
const ONE_CALL_MAX: u32 = 1 << 20;

/// Makes room for more output when `out` is full, without going past `limit`
/// bytes in all; `false` when `out` already holds `limit` bytes.
fn grow(out: &mut Vec<u8>, limit: usize) -> std::result::Result<bool, std::collections::TryReserveError> {
    if out.len() < out.capacity() {
        return Ok(true);
    }
    if out.len() >= limit {
        return Ok(false);
    }
    let target = out.capacity().saturating_mul(2).max(FIRST_STEP).min(limit);
    out.try_reserve_exact(target - out.len())?;
    Ok(true)
}

/// Recycled decompression state: one per stream, so chunk after chunk reuses
/// the zstd context and the output buffer.
#[derive(Default)]
pub struct Inflater {
    zstd: Option<zstd::zstd_safe::DCtx<'static>>,
}

impl Inflater {
    /// Decompresses `src` (the frame of the block whose header is at
    /// `offset`) into `out`, replacing its contents; `declared` is the
    /// uncompressed size the block header gives. `res` holds `out`'s share
    /// of the memory budget: the declared size must fit in it before
    /// anything is allocated.
    pub fn inflate(&mut self, codec: Codec, src: &[u8], declared: u32, offset: u64, out: &mut Vec<u8>, res: &mut Reservation) -> Result<()> {
        let r = self.inflate_in(codec, src, declared, offset, out, res);
        // Whatever happened, the share is what `out` holds now.
        let _ = res.set((out.capacity() as u64).min(res.bytes()));
        r
    }

    fn inflate_in(&mut self, codec: Codec, src: &[u8], declared: u32, offset: u64, out: &mut Vec<u8>, res: &mut Reservation) -> Result<()> {
        let fail = |what: String| Error::Decompress { offset, codec: codec.label(), what };
        if declared > MAX_BLOCK {
            return Err(fail(format!("declared size {declared} exceeds the {MAX_BLOCK}-byte limit")));
        }
        out.clear();
        // One byte past the declared size: room to notice a frame that
        // inflates to more than it declares.
        let limit = declared as usize + 1;
        res.set(out.capacity().max(limit) as u64).map_err(|e| Error::Budget {
            offset,
            what: "a compressed block",
            want: u64::from(declared),
            others: e.others,
            limit: e.limit,
        })?;
        let no_room = |_| fail(format!("cannot allocate memory for the declared {declared} bytes"));
        let too_long = || fail(format!("inflates to more than the declared {declared} bytes"));
        let check = |out: &Vec<u8>| {
            if out.len() != declared as usize {
                return Err(fail(format!("inflated to {} bytes, header declares {declared}", out.len())));
            }
            Ok(())
        };
        match codec {
            Codec::Zstd => {
                use zstd::zstd_safe::{get_error_name, DCtx, InBuffer, OutBuffer, ResetDirective};
                let d = match &mut self.zstd {
                    Some(d) => d,
                    None => self.zstd.insert(DCtx::try_create().ok_or_else(|| fail("cannot create a zstd context".into()))?),
                };
                d.reset(ResetDirective::SessionOnly).map_err(|c| fail(get_error_name(c).into()))?;
                if declared <= ONE_CALL_MAX {
                    out.try_reserve_exact(limit).map_err(no_room)?;
                    // Writes into spare capacity only: more than fits is an error.
                    d.decompress(out, src).map_err(|c| fail(get_error_name(c).into()))?;
                    return check(out);
                }
                let mut input = InBuffer::around(src);
                loop {
                    if !grow(out, limit).map_err(no_room)? {
                        return Err(too_long());
                    }
                    let len = out.len();
                    let hint = {
                        let mut o = OutBuffer::around_pos(out, len);
                        d.decompress_stream(&mut o, &mut input).map_err(|c| fail(get_error_name(c).into()))?
                    };
                    // 0: a frame ended and is flushed. trace-cmd writes one
                    // frame per block; more frames follow as ZSTD_decompress
                    // (the bulk API used before) would read them.
                    if hint == 0 && input.pos() == src.len() {
                        break;
                    }
                    if out.len() == len && input.pos() == src.len() && out.len() < out.capacity() {
                        return Err(fail(format!("frame cut short: {} of the declared {declared} bytes came out", out.len())));
                    }
                }
            }
            Codec::Zlib => {
                let mut z = flate2::Decompress::new(true);
                if declared <= ONE_CALL_MAX {
                    out.try_reserve_exact(limit).map_err(no_room)?;
                }
                loop {
                    if !grow(out, limit).map_err(no_room)? {
                        return Err(too_long());
                    }
                    let (len, used) = (out.len(), z.total_in());
                    let rest = src.get(used as usize..).unwrap_or_default();
                    // FlushDecompress::None: Finish asks miniz_oxide for the
                    // whole output in this one call and fails when it does not fit.
                    let status = z.decompress_vec(rest, out, flate2::FlushDecompress::None).map_err(|e| fail(e.to_string()))?;
                    if status == flate2::Status::StreamEnd {
                        break;
                    }
                    if out.len() == len && z.total_in() == used && out.len() < out.capacity() {
                        return Err(fail(format!(
                            "stream did not end within the declared {declared} bytes ({} of {} input bytes used, {} bytes out)",
                            z.total_in(),
                            src.len(),
                            out.len()
                        )));
                    }
                }
            }
            Codec::None | Codec::Unknown => {
                return Err(fail("block is flagged compressed but the file names no supported algorithm".into()));
            }
        }
        check(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zlib(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn round_trips_across_growth_steps() {
        // Both paths: one call below ONE_CALL_MAX, growing steps above.
        for n in [300_000u32, ONE_CALL_MAX + 300_000] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            let mut inf = Inflater::default();
            let mut out = Vec::new();
            let mut res = Reservation::default();
            for (codec, frame) in [(Codec::Zlib, zlib(&data)), (Codec::Zstd, zstd::bulk::compress(&data, 3).unwrap())] {
                inf.inflate(codec, &frame, data.len() as u32, 0, &mut out, &mut res).unwrap();
                assert!(out == data, "{codec:?}");
                // Declared one byte short or long: an error either way.
                assert!(inf.inflate(codec, &frame, data.len() as u32 - 1, 0, &mut out, &mut res).is_err());
                assert!(inf.inflate(codec, &frame, data.len() as u32 + 1, 0, &mut out, &mut res).is_err());
                // Cut short.
                assert!(inf.inflate(codec, &frame[..frame.len() / 2], data.len() as u32, 0, &mut out, &mut res).is_err());
            }
        }
    }

    /// A block declaring 512 MiB that inflates to 10 bytes allocates
    /// about what it inflates to, not what it declares.
    #[test]
    fn lying_size_costs_what_comes_out() {
        let mut inf = Inflater::default();
        for (codec, frame) in [(Codec::Zlib, zlib(b"0123456789")), (Codec::Zstd, zstd::bulk::compress(b"0123456789", 3).unwrap())] {
            let mut out = Vec::new();
            let mut res = Reservation::default();
            let e = inf.inflate(codec, &frame, MAX_BLOCK, 7, &mut out, &mut res).unwrap_err();
            assert!(e.to_string().contains("10"), "{e}");
            assert!(out.capacity() <= FIRST_STEP, "{codec:?}: {} bytes reserved", out.capacity());
            let mut out = Vec::new();
            assert!(inf.inflate(codec, &frame, ONE_CALL_MAX + 1, 7, &mut out, &mut res).is_err());
            assert!(res.bytes() <= FIRST_STEP as u64, "{codec:?}: {} bytes held", res.bytes());
            assert!(out.capacity() <= FIRST_STEP, "{codec:?}: {} bytes reserved", out.capacity());
        }
    }
}
