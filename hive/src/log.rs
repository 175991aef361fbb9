//! New-format transaction logs (spec "Format of transaction log files / New format", "Dirty state
//! of a hive", "Multiple transaction log files").
//!
//! A log file is a base block (its file type is 6) followed, from offset 512, by "HvLE" log
//! entries. Each entry carries a sequence number, the hive bins data size at the time, and dirty
//! pages to copy into the hive bins data. Entries are verified with two Marvin32 hashes; an entry
//! that fails verification ends its log. Entries from both logs are applied in sequence-number
//! order, starting at the primary file's sequence number, and must be consecutive.
//!
//! Old-format logs (Windows XP to 7, a "DIRT" dirty-page bitmap) are replayed too, under the
//! weaker checks that format allows (see [`replay_old`]).

use crate::base_block::{
    BASE_BLOCK_SIZE, BaseBlock, FILE_TYPE_LOG_NEW, FILE_TYPE_LOG_OLD, FILE_TYPE_PRIMARY,
    HBIN_ALIGN, checksum,
};
use crate::error::{Error, Result};
use crate::hbin::le_u32;
use crate::hive::MAX_HIVE_SIZE;

/// Log entries start at the second 512-byte sector of a log file.
pub(crate) const LOG_ENTRIES_START: usize = 512;
/// Log entries are aligned to 512 bytes.
pub(crate) const LOG_ENTRY_ALIGN: usize = 512;
/// Size of a log entry header before its dirty page references.
pub(crate) const LOG_ENTRY_HEADER: usize = 40;
/// The log entry signature.
pub(crate) const LOG_ENTRY_SIGNATURE: [u8; 4] = *b"HvLE";
/// Seed of both entry hashes (spec "Log entries", note 3: 14219357686671994754).
pub(crate) const LOG_HASH_SEED: u64 = 0xc555_4e7a_884d_ef82;

/// The Marvin32 hash (64-bit form: high state word in the upper half).
pub(crate) fn marvin32(seed: u64, data: &[u8]) -> u64 {
    fn mix(lo: &mut u32, hi: &mut u32) {
        *hi ^= *lo;
        *lo = lo.rotate_left(20);
        *lo = lo.wrapping_add(*hi);
        *hi = hi.rotate_left(9);
        *hi ^= *lo;
        *lo = lo.rotate_left(27);
        *lo = lo.wrapping_add(*hi);
        *hi = hi.rotate_left(19);
    }
    let s = seed.to_le_bytes();
    let mut lo = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let mut hi = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        lo = lo.wrapping_add(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        mix(&mut lo, &mut hi);
    }
    // The 0-3 trailing bytes are padded with a single 0x80 byte.
    let last = chunks
        .remainder()
        .iter()
        .rev()
        .fold(0x80u32, |acc, &b| (acc << 8) | u32::from(b));
    lo = lo.wrapping_add(last);
    mix(&mut lo, &mut hi);
    mix(&mut lo, &mut hi);
    (u64::from(hi) << 32) | u64::from(lo)
}

/// One verified log entry.
struct Entry<'a> {
    sequence: u32,
    hive_bins_data_size: u32,
    /// (offset in the hive bins data, bytes)
    pages: Vec<(u32, &'a [u8])>,
}

/// Parses the verified entries of one log, stopping at the first bad one.
fn entries(log: &[u8]) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    let mut at = LOG_ENTRIES_START;
    // Each entry is at least 512 bytes, so this ends after len/512 iterations.
    while let Some(hdr) = log.get(at..at.saturating_add(LOG_ENTRY_HEADER)) {
        match entry(log, at, hdr) {
            Some((e, size)) => {
                out.push(e);
                at = at.saturating_add(size);
            }
            None => break,
        }
    }
    out
}

fn entry<'a>(log: &'a [u8], at: usize, hdr: &[u8]) -> Option<(Entry<'a>, usize)> {
    if hdr.get(..4)? != LOG_ENTRY_SIGNATURE {
        return None;
    }
    let size = le_u32(hdr, 4)? as usize;
    if size < LOG_ENTRY_ALIGN || !size.is_multiple_of(LOG_ENTRY_ALIGN) {
        tracing::debug!(at, size, "log entry size is not a non-zero multiple of 512");
        return None;
    }
    let body = log.get(at..at.checked_add(size)?)?;
    let stored1 = u64::from(le_u32(body, 24)?) | (u64::from(le_u32(body, 28)?) << 32);
    let stored2 = u64::from(le_u32(body, 32)?) | (u64::from(le_u32(body, 36)?) << 32);
    if marvin32(LOG_HASH_SEED, body.get(LOG_ENTRY_HEADER..)?) != stored1
        || marvin32(LOG_HASH_SEED, body.get(..32)?) != stored2
    {
        tracing::debug!(at, "log entry hash mismatch");
        return None;
    }
    let sequence = le_u32(body, 12)?;
    let hive_bins_data_size = le_u32(body, 16)?;
    let count = le_u32(body, 20)? as usize;
    if !hive_bins_data_size.is_multiple_of(HBIN_ALIGN)
        || hive_bins_data_size as usize > MAX_HIVE_SIZE - BASE_BLOCK_SIZE
    {
        tracing::debug!(
            at,
            hive_bins_data_size,
            "log entry hive bins data size invalid"
        );
        return None;
    }
    let refs_end = count.checked_mul(8)?.checked_add(LOG_ENTRY_HEADER)?;
    if refs_end > size {
        return None;
    }
    let mut pages = Vec::with_capacity(count);
    let mut data_at = refs_end;
    // `count` is bounded by size/8 through the check above.
    for i in 0..count {
        let r = LOG_ENTRY_HEADER + i * 8;
        let off = le_u32(body, r)?;
        let len = le_u32(body, r + 4)? as usize;
        let end = (off as usize).checked_add(len)?;
        if end > hive_bins_data_size as usize {
            tracing::debug!(at, off, len, "dirty page past the hive bins data size");
            return None;
        }
        let bytes = body.get(data_at..data_at.checked_add(len)?)?;
        pages.push((off, bytes));
        data_at += len;
    }
    Some((
        Entry {
            sequence,
            hive_bins_data_size,
            pages,
        },
        size,
    ))
}

/// The dirty vector signature of old-format logs (spec "Old format / Dirty vector").
const DIRTY_VECTOR_SIGNATURE: [u8; 4] = *b"DIRT";
/// Old-format logs track the hive bins data in 512-byte pages.
const OLD_LOG_PAGE: usize = 512;
/// Largest clustering factor (sector size / 512) accepted: 4 KiB sectors.
const MAX_CLUSTERING_FACTOR: u32 = 8;

/// Replays an old-format log (Windows XP to 7): a base block copy, a "DIRT" bitmap of dirty
/// 512-byte pages of the hive bins data, then those pages. Such a log has no hashes: it is used
/// only if its base block checksum is right, its two sequence numbers are equal, and its last
/// written timestamp equals the primary file's (spec "Old format", notes 2 and 3). Returns
/// `None`, leaving `data` untouched, if the log does not qualify.
fn replay_old(data: &mut Vec<u8>, primary: &BaseBlock, log: &[u8], n: usize) -> Option<u32> {
    let base = match BaseBlock::parse(log, FILE_TYPE_LOG_OLD) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!("ignoring LOG{n}: {e}");
            return None;
        }
    };
    if !base.checksum_ok || base.primary_sequence != base.secondary_sequence {
        tracing::debug!("ignoring LOG{n}: bad checksum or unequal sequence numbers");
        return None;
    }
    // With a bad primary base block, the first bin's timestamp stands in for it (note 3).
    let primary_time = if primary.checksum_ok {
        primary.last_written
    } else {
        let t = data.get(BASE_BLOCK_SIZE + 20..BASE_BLOCK_SIZE + 28)?;
        u64::from_le_bytes(t.try_into().ok()?)
    };
    if base.last_written != primary_time {
        tracing::debug!("ignoring LOG{n}: it belongs to another write of the hive");
        return None;
    }
    let cf = le_u32(log, 44)?;
    if !(1..=MAX_CLUSTERING_FACTOR).contains(&cf) {
        tracing::debug!("ignoring LOG{n}: clustering factor {cf} not in 1..=8");
        return None;
    }
    let sector = OLD_LOG_PAGE * cf as usize;
    let size = base.hive_bins_data_size as usize;
    if size > MAX_HIVE_SIZE - BASE_BLOCK_SIZE {
        return None;
    }
    if log.get(sector..sector + 4)? != DIRTY_VECTOR_SIGNATURE {
        tracing::debug!("ignoring LOG{n}: no dirty vector");
        return None;
    }
    let bits = size / OLD_LOG_PAGE;
    let bitmap = log.get(sector + 4..sector + 4 + bits.div_ceil(8))?;
    let pages_start = (sector + 4 + bitmap.len()).div_ceil(sector) * sector;
    let dirty: Vec<usize> = (0..bits)
        .filter(|b| {
            bitmap
                .get(b / 8)
                .is_some_and(|byte| byte & (1 << (b % 8)) != 0)
        })
        .collect();
    // Check every page is present before changing anything.
    let pages_end = pages_start.checked_add(dirty.len().checked_mul(OLD_LOG_PAGE)?)?;
    if pages_end > log.len() {
        tracing::debug!(
            "ignoring LOG{n}: {} dirty pages but the log is short",
            dirty.len()
        );
        return None;
    }
    data.resize(BASE_BLOCK_SIZE + size, 0);
    for (i, bit) in dirty.iter().enumerate() {
        let src = log.get(pages_start + i * OLD_LOG_PAGE..pages_start + (i + 1) * OLD_LOG_PAGE)?;
        let at = BASE_BLOCK_SIZE + bit * OLD_LOG_PAGE;
        data.get_mut(at..at + OLD_LOG_PAGE)?.copy_from_slice(src);
    }
    let header = data.get_mut(..LOG_ENTRIES_START)?;
    header.copy_from_slice(log.get(..LOG_ENTRIES_START)?);
    header[28..32].copy_from_slice(&FILE_TYPE_PRIMARY.to_le_bytes());
    let sum = checksum(header);
    header[508..512].copy_from_slice(&sum.to_le_bytes());
    tracing::debug!(pages = dirty.len(), "replayed old-format LOG{n}");
    Some(1)
}

/// Replays `logs` into a dirty primary file. Returns how many entries were applied; on return
/// with at least one, `data`'s base block is clean and describes the replayed hive.
pub(crate) fn replay(
    data: &mut Vec<u8>,
    primary: &BaseBlock,
    logs: &[Option<&[u8]>],
) -> Result<u32> {
    let mut all: Vec<Entry<'_>> = Vec::new();
    let mut recovery_base: Option<&[u8]> = None;
    for (i, log) in logs.iter().enumerate() {
        let Some(log) = log else { continue };
        if log.get(28..32) == Some(&FILE_TYPE_LOG_OLD.to_le_bytes()) {
            if let Some(n) = replay_old(data, primary, log, i + 1) {
                return Ok(n);
            }
            continue;
        }
        let base = match BaseBlock::parse(log, FILE_TYPE_LOG_NEW) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!("ignoring LOG{}: {e}", i + 1);
                continue;
            }
        };
        if !base.checksum_ok {
            tracing::debug!("ignoring LOG{}: its base block checksum is wrong", i + 1);
            continue;
        }
        if recovery_base.is_none() {
            recovery_base = log.get(..LOG_ENTRIES_START);
        }
        all.extend(entries(log));
    }
    // With a bad primary checksum, the base block is recovered from a log (spec note 6).
    let (start, base_bytes): (u32, Option<&[u8]>) = if primary.checksum_ok {
        (primary.primary_sequence, None)
    } else {
        let Some(b) = recovery_base else {
            return Ok(0);
        };
        (le_u32(b, 4).unwrap_or(0), Some(b))
    };
    all.retain(|e| e.sequence >= start);
    all.sort_by_key(|e| e.sequence);
    all.dedup_by_key(|e| e.sequence);
    let mut applied = 0u32;
    let mut last: Option<(u32, u32)> = None;
    for e in &all {
        if let Some((seq, _)) = last
            && Some(e.sequence) != seq.checked_add(1)
        {
            tracing::debug!(
                expected = seq + 1,
                found = e.sequence,
                "gap in log sequence numbers"
            );
            break;
        }
        let new_len = BASE_BLOCK_SIZE + e.hive_bins_data_size as usize;
        data.resize(new_len.max(BASE_BLOCK_SIZE), 0);
        for (off, bytes) in &e.pages {
            let at = BASE_BLOCK_SIZE + *off as usize;
            // Bounds were checked against the entry's hive bins data size when parsing.
            if let Some(dst) = data.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        last = Some((e.sequence, e.hive_bins_data_size));
        applied += 1;
    }
    let Some((seq, size)) = last else {
        return Ok(0);
    };
    if let Some(b) = base_bytes
        && let Some(dst) = data.get_mut(..b.len())
    {
        dst.copy_from_slice(b);
    }
    let header = data
        .get_mut(..LOG_ENTRIES_START)
        .ok_or_else(|| Error::corrupt("base block", 0, "too short after log replay"))?;
    header[4..8].copy_from_slice(&seq.to_le_bytes());
    header[8..12].copy_from_slice(&seq.to_le_bytes());
    header[28..32].copy_from_slice(&FILE_TYPE_PRIMARY.to_le_bytes());
    header[40..44].copy_from_slice(&size.to_le_bytes());
    let sum = checksum(header);
    header[508..512].copy_from_slice(&sum.to_le_bytes());
    tracing::debug!(applied, sequence = seq, "replayed transaction log entries");
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn marvin32_published_vectors() {
        // Test vectors published with .NET's Marvin implementation (seed 0x004fb61a001bdbcc).
        let seed = 0x004f_b61a_001b_dbcc;
        for (data, want) in [
            ("", 0x30ed_35c1_00cd_3c7d_u64),
            ("af", 0x48e7_3fc7_7d75_ddc1),
            ("e70f", 0xb5f6_e1fc_485d_bff8),
            ("37f495", 0xf0b0_7c78_9b8c_f7e8),
            ("8642dc59", 0x7008_f2e8_7e9c_f556),
            ("153fb79826", 0xe6c0_8c6d_a2af_a997),
            ("0932e6246c47", 0x6f04_bf1a_5ea2_4060),
            ("ab427ea8d10fc7", 0xe118_47e4_f067_8c41),
        ] {
            assert_eq!(marvin32(seed, &unhex(data)), want, "data {data}");
        }
    }
}
