//! trace.dat writer (v6 and v7; none, zstd, zlib).
