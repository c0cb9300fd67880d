//! The codecs a v7 trace.dat may name in its compression header. trace-cmd
//! compresses each block in one call (lib/trace-cmd/trace-compress-zstd.c:
//! `ZSTD_compress2`; trace-compress-zlib.c: `compress2`, i.e. zlib format with
//! its 2-byte header and Adler-32, not raw deflate), so blocks here are
//! independent frames too.

use std::io::Write;

use crate::{Error, Result};

/// Compression of a trace.dat file. Only v7 files can be compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Zstd,
    Zlib,
}

impl Compression {
    /// The name written in the v7 compression header.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Zlib => "zlib",
        }
    }

    /// The version written after the name. trace-cmd's zstd reader accepts any
    /// version; its zlib reader only compares the major number with the
    /// library's (`zlib_is_supported`: `atoi(version) <= atoi(zlibVersion())`),
    /// so "1.3" is read by every zlib 1.x. flate2 here is not libz, so there is
    /// no library version to report.
    pub fn version(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => zstd::zstd_safe::version_string(),
            Compression::Zlib => "1.3",
        }
    }

    pub fn is_compressed(self) -> bool {
        self != Compression::None
    }
}

/// zstd's first fast level: writing (merge --format dat, record) must keep
/// up with decoding. On ring-buffer pages level -1 compresses ~20% faster
/// than 1 for a file ~4% larger at trace-cmd's 10-page chunks, and as small
/// as level 1 at 10 pages when chunks are 32 pages (bench/README).
const ZSTD_LEVEL: i32 = -1;

/// A reusable compressor for one codec.
pub(crate) struct Codec {
    kind: Compression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// zstd's output, reused: no allocation per block.
    scratch: Vec<u8>,
}

impl Codec {
    pub(crate) fn new(kind: Compression) -> Result<Codec> {
        let zstd = match kind {
            Compression::Zstd => Some(
                zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| {
                    Error::Io {
                        what: "creating a zstd compressor".into(),
                        source: e,
                    }
                })?,
            ),
            _ => None,
        };
        Ok(Codec { kind, zstd, scratch: Vec::new() })
    }

    /// Compresses `data` as one independent block, appending to `out`.
    pub(crate) fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        match self.kind {
            Compression::None => out.extend_from_slice(data),
            Compression::Zstd => {
                let c = self.zstd.as_mut().expect("zstd compressor exists for Zstd");
                self.scratch.clear();
                self.scratch.reserve(zstd::zstd_safe::compress_bound(data.len()));
                c.compress_to_buffer(data, &mut self.scratch).map_err(|e| Error::Io {
                    what: "zstd compression".into(),
                    source: e,
                })?;
                out.extend_from_slice(&self.scratch);
            }
            Compression::Zlib => {
                let mut enc = flate2::write::ZlibEncoder::new(out, flate2::Compression::default());
                enc.write_all(data)
                    .and_then(|_| enc.finish().map(|_| ()))
                    .map_err(|e| Error::Io {
                        what: "zlib compression".into(),
                        source: e,
                    })?;
            }
        }
        Ok(())
    }
}
