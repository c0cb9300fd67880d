//! Writing ftrace data: a streaming trace.dat writer (file versions 6 and 7,
//! compression none / zstd / zlib) and a builder of kernel-format ring-buffer
//! pages. Sits at the end of the pipeline: `tscmerge`'s `synth` and its dat
//! sink use it; nothing in `ftrace` reads through it.
//!
//! - [`page`]: [`PageBuilder`] packs `(timestamp, record)` into ring pages.
//! - [`dat`]: [`TraceDatWriter`] lays the pages and metadata out as trace-cmd does.
//! - [`compress`]: the v7 block codecs.
//! - [`append`]: options added to a finished v7 file (trace-cmd's way).
//! - [`hostguest`]: the values of trace-cmd's host-guest options (TRACEID, GUEST, TSC2NSEC).
//!
//! Own options: trace-cmd 3.1.6 skips option ids it does not know — silently
//! in `report` (trace-input.c `handle_options` logs "unknown option N" only at
//! `--debug` level) — so provenance can go in [`OptionData::Raw`] with an id
//! from [`option_id::PRIVATE_FIRST`] (tested in tests/write_dat.rs).

pub mod append;
pub mod compress;
pub mod dat;
pub mod hostguest;
pub mod page;

pub use append::append_options;
pub use compress::Compression;
pub use dat::{
    option_id, BufferId, ChunkCompressor, Header, OptionData, TraceDatWriter, TsyncSample, DEFAULT_CHUNK_PAGES,
};
pub use page::{pack_events, PageBuilder};
