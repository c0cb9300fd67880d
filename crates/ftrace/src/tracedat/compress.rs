//! Decompression of trace.dat v7 blocks (trace-cmd lib/trace-cmd/trace-compress.c
//! and its zstd/zlib back ends). Every block declares its uncompressed size;
//! we cap it, reserve exactly that with `try_reserve_exact`, decompress into
//! the spare capacity only, and require the declared size to come out.

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

/// Recycled decompression state: one per stream, so chunk after chunk reuses
/// the zstd context and the output buffer.
#[derive(Default)]
pub struct Inflater {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl Inflater {
    /// Decompresses `src` (the frame of the block whose header is at
    /// `offset`) into `out`, replacing its contents; `declared` is the
    /// uncompressed size the block header gives.
    pub fn inflate(&mut self, codec: Codec, src: &[u8], declared: u32, offset: u64, out: &mut Vec<u8>) -> Result<()> {
        let fail = |what: String| Error::Decompress { offset, codec: codec.label(), what };
        if declared > MAX_BLOCK {
            return Err(fail(format!("declared size {declared} exceeds the {MAX_BLOCK}-byte limit")));
        }
        out.clear();
        out.try_reserve_exact(declared as usize)
            .map_err(|_| fail(format!("cannot allocate {declared} bytes")))?;
        match codec {
            Codec::Zstd => {
                if self.zstd.is_none() {
                    self.zstd = Some(zstd::bulk::Decompressor::new().map_err(|e| fail(e.to_string()))?);
                }
                let d = self.zstd.as_mut().ok_or_else(|| fail("no decompressor".into()))?;
                // Writes into spare capacity only (the reserved size, or a
                // recycled buffer's larger one): more output is an error or
                // fails the length check below.
                d.decompress_to_buffer(src, out).map_err(|e| fail(e.to_string()))?;
            }
            Codec::Zlib => {
                let mut z = flate2::Decompress::new(true);
                let status = z
                    .decompress_vec(src, out, flate2::FlushDecompress::Finish)
                    .map_err(|e| fail(e.to_string()))?;
                if status != flate2::Status::StreamEnd {
                    return Err(fail(format!(
                        "stream did not end within the declared {declared} bytes ({} of {} input bytes used)",
                        z.total_in(),
                        src.len()
                    )));
                }
            }
            Codec::None | Codec::Unknown => {
                return Err(fail("block is flagged compressed but the file names no supported algorithm".into()));
            }
        }
        if out.len() != declared as usize {
            return Err(fail(format!("inflated to {} bytes, header declares {declared}", out.len())));
        }
        Ok(())
    }
}
