//! The initramfs container: concatenated segments, each an uncompressed newc archive (early
//! microcode, dracut's early cpio) or a compressed stream of archives, as the kernel's
//! `unpack_to_rootfs` (init/initramfs.c) reads them: zero bytes between segments are skipped, a
//! `0` at a 4-aligned offset starts an uncompressed archive, anything else must be a compressed
//! stream the kernel was built to decompress (lib/decompress.c lists the magics).
//!
//! Rebuilding (see [`rebuild`]) keeps the uncompressed segments before the main one byte for byte
//! and rewrites the main segment (and anything after it) as one archive: the original entries in
//! their order, the replaced ones in place, the added ones at the end, compressed again with the
//! main segment's codec (the kernel was built with that decompressor). Appending a second
//! compressed segment would be smaller to write and the kernel would read it (later entries
//! replace earlier ones), but the distributions' own tools would not: `lsinitramfs`,
//! `unmkinitramfs` and `lsinitrd` decompress the rest of the image and hand it to one `cpio`,
//! which stops at the first `TRAILER!!!`, so the added modules would be invisible to anyone
//! checking the image; lz4's legacy format has no end marker at all. An image without a
//! compressed segment gets one more uncompressed archive, which those tools list as well.

use std::io::Read;

use super::cpio::{self, Archive, Entry};
use super::error::{Error, Result};

/// gzip member magic (RFC 1952 §2.3.1).
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// zstd frame magic (RFC 8878 §3.1.1).
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// xz stream header magic (xz file format 1.2.1 §2.1.1.1).
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
/// The `.lzma` ("lzma_alone") header starts with properties 0x5d and a small dictionary size;
/// the kernel matches these two bytes (lib/decompress.c).
const LZMA_MAGIC: &[u8] = &[0x5d, 0x00];
/// bzip2 stream magic.
const BZIP2_MAGIC: &[u8] = b"BZh";
/// lz4 legacy frame magic, little-endian 0x184C2102 (lz4 frame format, "Legacy frame").
const LZ4_LEGACY_MAGIC: &[u8] = &[0x02, 0x21, 0x4c, 0x18];
/// lzo (lzop) magic; the kernel can read it, we cannot.
const LZO_MAGIC: &[u8] = &[0x89, b'L', b'Z', b'O'];
/// Every chunk of an lz4 legacy frame but the last decompresses to exactly this many bytes.
const LZ4_LEGACY_CHUNK: usize = 8 << 20;
/// Most segments in one image (early cpio, microcode, main, a few appended).
const MAX_SEGMENTS: usize = 64;
/// Inode numbers of the archives we write start here, far from those mkinitramfs/dracut use.
const FIRST_INO: u32 = 0x7e00_0000;

/// A segment's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    None,
    Gzip,
    Zstd,
    Xz,
    Lzma,
    Lz4Legacy,
}

impl Codec {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::None => "uncompressed",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Xz => "xz",
            Self::Lzma => "lzma",
            Self::Lz4Legacy => "lz4",
        }
    }
}

/// One segment: where it is in the image, its codec, and the archives it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) offset: usize,
    pub(crate) len: usize,
    pub(crate) codec: Codec,
    pub(crate) entries: Vec<Entry>,
}

/// A split image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image {
    pub(crate) segments: Vec<Segment>,
}

impl Image {
    /// The codec of the main archive: the first compressed segment's, else uncompressed.
    pub(crate) fn main_codec(&self) -> Codec {
        self.segments
            .iter()
            .map(|s| s.codec)
            .find(|c| *c != Codec::None)
            .unwrap_or(Codec::None)
    }

    /// The files as the kernel leaves them: later entries replace earlier ones of the same name.
    pub(crate) fn merged(&self) -> std::collections::BTreeMap<String, &Entry> {
        let mut m = std::collections::BTreeMap::new();
        for e in self.segments.iter().flat_map(|s| s.entries.iter()) {
            m.insert(e.name.clone(), e);
        }
        m
    }
}

/// A reader over a slice that counts what the decoder consumed.
struct Counted<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        if let (Some(d), Some(s)) = (buf.get_mut(..n), rest.get(..n)) {
            d.copy_from_slice(s);
        }
        self.pos = self.pos.saturating_add(n);
        Ok(n)
    }
}

/// Reads all of `r` into memory, refusing more than `budget` bytes (a decompression bomb).
fn read_bounded(r: impl Read, budget: &mut u64, at: u64, codec: Codec) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(budget.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| {
            Error::corrupt(
                "compressed initramfs segment",
                at,
                format!("{}: {e}", codec.name()),
            )
        })?;
    if out.len() as u64 > *budget {
        return Err(Error::limit(
            "decompressed initramfs bytes",
            super::MAX_UNPACKED,
        ));
    }
    *budget = budget.saturating_sub(out.len() as u64);
    Ok(out)
}

/// Decompresses the stream at the start of `data`: (decompressed bytes, compressed length).
fn decompress(data: &[u8], codec: Codec, budget: &mut u64, at: u64) -> Result<(Vec<u8>, usize)> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::corrupt(
            "compressed initramfs segment",
            at,
            format!("{}: {e}", codec.name()),
        )
    };
    match codec {
        Codec::None => Ok((data.to_vec(), data.len())),
        Codec::Gzip => {
            let mut d = flate2::bufread::GzDecoder::new(data);
            let out = read_bounded(&mut d, budget, at, codec)?;
            let rest = d.into_inner().len();
            Ok((out, data.len().saturating_sub(rest)))
        }
        Codec::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| bad(&e))?
                .single_frame();
            let out = read_bounded(&mut d, budget, at, codec)?;
            let rest = d.finish().len();
            Ok((out, data.len().saturating_sub(rest)))
        }
        Codec::Xz => {
            let mut c = Counted { data, pos: 0 };
            let out = {
                let d = lzma_rust2::XzReader::new(&mut c, false);
                read_bounded(d, budget, at, codec)?
            };
            Ok((out, c.pos))
        }
        Codec::Lzma => {
            let mut c = Counted { data, pos: 0 };
            let out = {
                // 1 GiB of dictionary is the most the format's header may ask for here.
                let d = lzma_rust2::LzmaReader::new_mem_limit(&mut c, 1 << 20, None)
                    .map_err(|e| bad(&e))?;
                read_bounded(d, budget, at, codec)?
            };
            Ok((out, c.pos))
        }
        Codec::Lz4Legacy => lz4_legacy_decode(data, budget, at),
    }
}

/// Decodes an lz4 legacy frame: magic, then chunks of (u32 LE compressed size, block). Every
/// chunk but the last decompresses to [`LZ4_LEGACY_CHUNK`] bytes; a shorter one ends the frame.
fn lz4_legacy_decode(data: &[u8], budget: &mut u64, at: u64) -> Result<(Vec<u8>, usize)> {
    let mut pos = LZ4_LEGACY_MAGIC.len();
    let mut out = Vec::new();
    let max_chunk = lz4_flex::block::get_maximum_output_size(LZ4_LEGACY_CHUNK);
    // Each chunk moves on by at least 5 bytes, so this ends.
    while let Some(sz) = data.get(pos..pos.saturating_add(4)) {
        let mut le = [0u8; 4];
        le.copy_from_slice(sz);
        let n = u32::from_le_bytes(le);
        if le == *b"0707" || n == 0 {
            // An archive (or padding) follows: the frame has ended.
            break;
        }
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n > max_chunk {
            return Err(Error::corrupt(
                "lz4 chunk",
                at.saturating_add(pos as u64),
                format!("compressed size {n} over {max_chunk}"),
            ));
        }
        let block = data
            .get(pos.saturating_add(4)..pos.saturating_add(4).saturating_add(n))
            .ok_or_else(|| {
                Error::corrupt(
                    "lz4 chunk",
                    at.saturating_add(pos as u64),
                    format!("{n} bytes run past the end"),
                )
            })?;
        let dec = lz4_flex::block::decompress(block, LZ4_LEGACY_CHUNK).map_err(|e| {
            Error::corrupt("lz4 chunk", at.saturating_add(pos as u64), e.to_string())
        })?;
        if dec.len() as u64 > *budget {
            return Err(Error::limit(
                "decompressed initramfs bytes",
                super::MAX_UNPACKED,
            ));
        }
        *budget = budget.saturating_sub(dec.len() as u64);
        pos = pos.saturating_add(4).saturating_add(n);
        let last = dec.len() < LZ4_LEGACY_CHUNK;
        out.extend_from_slice(&dec);
        if last {
            break;
        }
    }
    Ok((out, pos))
}

fn lz4_legacy_encode(data: &[u8]) -> Vec<u8> {
    let mut out = LZ4_LEGACY_MAGIC.to_vec();
    for chunk in data.chunks(LZ4_LEGACY_CHUNK) {
        let c = lz4_flex::block::compress(chunk);
        // A chunk of at most 8 MiB compresses to less than 4 GiB.
        let n = u32::try_from(c.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&c);
    }
    out
}

/// Compresses `data` with `codec` as the kernel's decompressors accept it.
fn compress(data: &[u8], codec: Codec) -> Result<Vec<u8>> {
    use std::io::Write;
    let io = |e: std::io::Error| {
        Error::unsupported("initramfs compression", format!("{}: {e}", codec.name()))
    };
    match codec {
        Codec::None => Ok(data.to_vec()),
        Codec::Lzma => {
            // The .lzma header with the size known, as the kernel's unlzma reads it.
            let o = lzma_rust2::LzmaOptions::with_preset(6);
            let mut w =
                lzma_rust2::LzmaWriter::new_use_header(Vec::new(), &o, Some(data.len() as u64))
                    .map_err(io)?;
            w.write_all(data).map_err(io)?;
            w.finish().map_err(io)
        }
        Codec::Gzip => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            w.write_all(data).map_err(io)?;
            w.finish().map_err(io)
        }
        Codec::Zstd => zstd::stream::encode_all(data, 3).map_err(io),
        Codec::Xz => {
            // The kernel's xz decoder checks CRC32 (CRC64 only in newer kernels), as
            // initramfs-tools and dracut invoke `xz --check=crc32`.
            let mut o = lzma_rust2::XzOptions::with_preset(6);
            o.set_check_sum_type(lzma_rust2::CheckType::Crc32);
            let mut w = lzma_rust2::XzWriter::new(Vec::new(), o).map_err(io)?;
            w.write_all(data).map_err(io)?;
            w.finish().map_err(io)
        }
        Codec::Lz4Legacy => Ok(lz4_legacy_encode(data)),
    }
}

/// Parses the concatenated archives of one decompressed stream (zero padding between them).
fn parse_archives(data: &[u8], at: u64, budget: &mut u64) -> Result<Vec<Entry>> {
    let mut pos = 0usize;
    let mut entries = Vec::new();
    for _ in 0..MAX_SEGMENTS {
        while data.get(pos) == Some(&0) {
            pos = pos.saturating_add(1);
        }
        if pos >= data.len() {
            return Ok(entries);
        }
        let Archive { entries: e, len } = cpio::parse(
            data.get(pos..).unwrap_or_default(),
            at.saturating_add(pos as u64),
            budget,
        )?;
        if entries.len().saturating_add(e.len()) > cpio::MAX_ENTRIES {
            return Err(Error::limit("cpio entries", cpio::MAX_ENTRIES as u64));
        }
        entries.extend(e);
        pos = pos.saturating_add(len.max(1));
    }
    Err(Error::limit("archives in one segment", MAX_SEGMENTS as u64))
}

/// Splits an initramfs into its segments and parses every archive in them.
///
/// # Errors
/// [`Error::Unsupported`] for bzip2, lzo or an unknown magic; [`Error::Corrupt`] for damaged
/// streams or archives; [`Error::Limit`] past [`super::MAX_UNPACKED`] decompressed bytes,
/// [`MAX_SEGMENTS`] segments or [`cpio::MAX_ENTRIES`] entries.
pub(crate) fn split(data: &[u8]) -> Result<Image> {
    let mut budget = super::MAX_UNPACKED;
    let mut segments = Vec::new();
    let mut pos = 0usize;
    loop {
        while data.get(pos) == Some(&0) {
            pos = pos.saturating_add(1);
        }
        let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) else {
            break;
        };
        if segments.len() >= MAX_SEGMENTS {
            return Err(Error::limit("initramfs segments", MAX_SEGMENTS as u64));
        }
        let at = pos as u64;
        if rest.starts_with(b"07070") {
            if !pos.is_multiple_of(4) {
                return Err(Error::corrupt(
                    "initramfs segment",
                    at,
                    "uncompressed archive not 4-byte aligned".into(),
                ));
            }
            let a = cpio::parse(rest, at, &mut budget)?;
            segments.push(Segment {
                offset: pos,
                len: a.len,
                codec: Codec::None,
                entries: a.entries,
            });
            pos = pos.saturating_add(a.len.max(1));
            continue;
        }
        let codec = if rest.starts_with(GZIP_MAGIC) {
            Codec::Gzip
        } else if rest.starts_with(ZSTD_MAGIC) {
            Codec::Zstd
        } else if rest.starts_with(XZ_MAGIC) {
            Codec::Xz
        } else if rest.starts_with(LZ4_LEGACY_MAGIC) {
            Codec::Lz4Legacy
        } else if rest.starts_with(LZMA_MAGIC) {
            Codec::Lzma
        } else if rest.starts_with(BZIP2_MAGIC) {
            return Err(Error::unsupported("initramfs compression", "bzip2".into()));
        } else if rest.starts_with(LZO_MAGIC) {
            return Err(Error::unsupported("initramfs compression", "lzo".into()));
        } else {
            let head: Vec<String> = rest.iter().take(4).map(|b| format!("{b:02x}")).collect();
            return Err(Error::unsupported(
                "initramfs compression",
                format!("unknown magic {} at offset {at:#x}", head.join(" ")),
            ));
        };
        let (plain, used) = decompress(rest, codec, &mut budget, at)?;
        let entries = parse_archives(&plain, 0, &mut budget).map_err(|e| match e {
            Error::Corrupt {
                structure, detail, ..
            } => Error::corrupt(
                structure,
                at,
                format!("inside the {} segment: {detail}", codec.name()),
            ),
            other => other,
        })?;
        segments.push(Segment {
            offset: pos,
            len: used,
            codec,
            entries,
        });
        pos = pos.saturating_add(used.max(1));
    }
    if segments.is_empty() {
        return Err(Error::corrupt(
            "initramfs",
            0,
            "no archive in the image".into(),
        ));
    }
    Ok(Image { segments })
}

/// The new image: `original` (whose split is `img`) with `added` laid over it (see the module
/// docs for how).
///
/// # Errors
/// [`Error::Limit`] for entries cpio cannot hold; codec errors.
pub(crate) fn rebuild(original: &[u8], img: &Image, added: &[Entry]) -> Result<Vec<u8>> {
    let codec = img.main_codec();
    let Some(first) = img
        .segments
        .iter()
        .position(|s| s.codec == codec && codec != Codec::None)
    else {
        // An uncompressed image: append one more archive, 4-aligned as the kernel requires.
        let mut plain = Vec::new();
        cpio::write(&mut plain, added, FIRST_INO)?;
        let mut out = original.to_vec();
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend(plain);
        return Ok(out);
    };
    // Rewrite from the main segment on as one archive: the original entries in their order
    // (replaced ones in place), then the new ones.
    let start = img.segments.get(first).map_or(0, |s| s.offset);
    let mut merged: Vec<Entry> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for e in img
        .segments
        .iter()
        .skip(first)
        .flat_map(|s| s.entries.iter())
        .chain(added.iter())
    {
        if let Some(&i) = index.get(&e.name) {
            if let Some(slot) = merged.get_mut(i) {
                *slot = e.clone();
            }
        } else {
            index.insert(e.name.clone(), merged.len());
            merged.push(e.clone());
        }
    }
    let mut plain = Vec::new();
    cpio::write(&mut plain, &merged, FIRST_INO)?;
    let mut out = original.get(..start).unwrap_or_default().to_vec();
    out.extend(compress(&plain, codec)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn archive(entries: &[Entry]) -> Vec<u8> {
        let mut b = Vec::new();
        cpio::write(&mut b, entries, 1).unwrap();
        b
    }

    fn early() -> Vec<u8> {
        archive(&[
            Entry::dir("kernel", 0o755),
            Entry::file(
                "kernel/x86/microcode/GenuineIntel.bin",
                0o644,
                vec![0xaa; 1000],
            ),
        ])
    }

    fn main_archive() -> Vec<u8> {
        archive(&[
            Entry::dir("usr", 0o755),
            Entry::file("init", 0o755, b"#!/bin/sh\n".to_vec()),
            Entry::file(
                "usr/lib/modules/6.1.0/modules.dep",
                0o644,
                b"old\n".to_vec(),
            ),
        ])
    }

    pub(crate) fn image(codec: Codec) -> Vec<u8> {
        let mut img = early();
        img.extend(compress(&main_archive(), codec).unwrap());
        img
    }

    const ALL: [Codec; 6] = [
        Codec::None,
        Codec::Gzip,
        Codec::Zstd,
        Codec::Xz,
        Codec::Lzma,
        Codec::Lz4Legacy,
    ];

    #[test]
    fn every_codec_splits_and_rebuilds() {
        for codec in ALL {
            let data = image(codec);
            let img = split(&data).unwrap();
            let n_early = early().len();
            if codec == Codec::None {
                assert_eq!(img.segments.len(), 2, "{codec:?}");
            } else {
                assert_eq!(img.segments.len(), 2, "{codec:?}");
                assert_eq!(img.segments[1].codec, codec);
                assert_eq!(img.segments[1].len, data.len() - n_early, "{codec:?}");
            }
            assert_eq!(img.segments[0].offset, 0);
            assert_eq!(img.segments[0].len, n_early);
            assert_eq!(img.segments[1].offset, n_early);
            assert_eq!(img.main_codec(), codec);
            let names: Vec<_> = img.merged().keys().cloned().collect();
            assert_eq!(
                names,
                [
                    "init",
                    "kernel",
                    "kernel/x86/microcode/GenuineIntel.bin",
                    "usr",
                    "usr/lib/modules/6.1.0/modules.dep"
                ]
            );
            // Rebuild with a replaced file and a new one.
            let added = [
                Entry::file(
                    "usr/lib/modules/6.1.0/modules.dep",
                    0o644,
                    b"new\n".to_vec(),
                ),
                Entry::file("usr/x", 0o644, b"x".to_vec()),
            ];
            let out = rebuild(&data, &img, &added).unwrap();
            // The early segment is byte-identical.
            assert_eq!(out[..n_early], data[..n_early], "{codec:?}");
            if codec == Codec::None {
                assert_eq!(out[..data.len()], data[..], "{codec:?}: original kept");
            }
            let again = split(&out).unwrap();
            let m = again.merged();
            assert_eq!(
                m["usr/lib/modules/6.1.0/modules.dep"].data, b"new\n",
                "{codec:?}"
            );
            assert_eq!(m["usr/x"].data, b"x");
            assert_eq!(m["init"].data, b"#!/bin/sh\n");
            assert_eq!(again.main_codec(), codec);
        }
    }

    fn have(tool: &str) -> bool {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok()
    }

    /// Host tools' streams (as mkinitramfs makes them) split with exact segment lengths, and
    /// the host's cpio reads the segment we append.
    #[test]
    fn host_tool_streams() {
        for (tool, args, codec) in [
            ("gzip", &["-c", "-9"][..], Codec::Gzip),
            ("zstd", &["-q", "-c", "-19"][..], Codec::Zstd),
            ("xz", &["-c", "--check=crc32"][..], Codec::Xz),
            ("lzma", &["-c"][..], Codec::Lzma),
            ("lz4", &["-l", "-c"][..], Codec::Lz4Legacy),
        ] {
            if !have(tool) {
                println!("skipping: {tool} not found");
                continue;
            }
            let mut child = std::process::Command::new(tool)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(&main_archive())
                    .unwrap();
            }
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{tool}");
            let mut data = early();
            data.extend(&out.stdout);
            // A trailing uncompressed archive proves the compressed length is exact (not
            // for lzma, which we never append after).
            let exact = codec != Codec::Lzma;
            if exact {
                while !data.len().is_multiple_of(4) {
                    data.push(0);
                }
                data.extend(archive(&[Entry::file("after", 0o644, b"a".to_vec())]));
            }
            let img = split(&data).unwrap();
            assert_eq!(img.segments.len(), 2 + usize::from(exact), "{tool}");
            assert_eq!(img.segments[1].codec, codec, "{tool}");
            if exact {
                assert_eq!(img.segments[1].len, out.stdout.len(), "{tool}");
                assert_eq!(img.merged()["after"].data, b"a", "{tool}");
            }
            assert_eq!(img.merged()["init"].data, b"#!/bin/sh\n", "{tool}");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(
            split(b"BZh91AY&SY....").unwrap_err().to_string(),
            "unsupported initramfs compression: bzip2"
        );
        assert_eq!(
            split(b"\x89LZO\0\r\n").unwrap_err().to_string(),
            "unsupported initramfs compression: lzo"
        );
        assert_eq!(
            split(b"MZ\x90\0").unwrap_err().to_string(),
            "unsupported initramfs compression: unknown magic 4d 5a 90 00 at offset 0x0"
        );
        assert_eq!(
            split(&[0u8; 16]).unwrap_err().to_string(),
            "corrupt initramfs at offset 0x0: no archive in the image"
        );
        // Truncated gzip.
        let g = image(Codec::Gzip);
        let e = split(&g[..g.len() - 20]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("corrupt compressed initramfs segment at offset 0x"),
            "{e}"
        );
        // A misaligned uncompressed archive.
        let mut data = early();
        data.push(0);
        data.extend(b"07070");
        let e = split(&data).unwrap_err();
        assert!(e.to_string().contains("not 4-byte aligned"), "{e}");
    }

    #[test]
    fn decompression_bomb_is_refused() {
        // 2 MiB of zeros inside a cpio member, with a 1 MiB budget.
        let big = archive(&[Entry::file("z", 0o644, vec![0; 2 << 20])]);
        let z = compress(&big, Codec::Zstd).unwrap();
        let mut budget = 1 << 20;
        let e = decompress(&z, Codec::Zstd, &mut budget, 0).unwrap_err();
        assert!(matches!(e, Error::Limit { .. }), "{e}");
        let g = compress(&big, Codec::Gzip).unwrap();
        let mut budget = 1 << 20;
        assert!(matches!(
            decompress(&g, Codec::Gzip, &mut budget, 0),
            Err(Error::Limit { .. })
        ));
    }
}
