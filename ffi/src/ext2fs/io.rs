//! Our libext2fs I/O manager: every block libext2fs reads or writes goes to a
//! [`disk::block::BlockWrite`] device (raw, qcow2, NBD, a [`disk::txn::Transaction`]).
//!
//! libext2fs opens a device by *name* only (`ext2fs_open2(name, …, manager, …)`), so the device
//! is put in a process-wide table under a unique name for the duration of `ext2fs_open2`
//! ([`Registration`]); the manager's `open` callback takes it from there into the channel's
//! private data, and the channel's `close` callback drops it. Every callback catches panics, so
//! none can unwind into C, and records the device's [`disk::Error`] so the caller can report it
//! instead of a bare errno.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char, c_int, c_long, c_ulong, c_ulonglong, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use disk::block::{BlockWrite, ZeroMode};

use super::sys::{self, Errcode, IoChannel, IoManager, IoStats};

/// The device behind one open filesystem, shared by the channel and the [`super::Ext2Fs`].
pub(crate) struct Shared {
    pub(crate) dev: Arc<dyn BlockWrite>,
    last_error: Mutex<Option<disk::Error>>,
}

impl Shared {
    pub(crate) fn new(dev: Arc<dyn BlockWrite>) -> Arc<Self> {
        Arc::new(Self {
            dev,
            last_error: Mutex::new(None),
        })
    }

    /// The device error behind the last failed callback, if any.
    pub(crate) fn take_error(&self) -> Option<disk::Error> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn record(&self, e: disk::Error, code_if_bounds: Errcode) -> Errcode {
        let code = match &e {
            disk::Error::OutOfBounds { .. } => code_if_bounds,
            disk::Error::ReadOnly => c_long::from(libc::EROFS),
            _ => c_long::from(libc::EIO),
        };
        tracing::debug!(error = %e, code, "ext2fs i/o callback failed");
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
        code
    }
}

/// What a channel's `private_data` points to.
struct ChannelData {
    shared: Arc<Shared>,
    stats: IoStats,
}

/// Devices waiting to be opened by libext2fs, by name.
static REGISTRY: Mutex<BTreeMap<CString, Arc<Shared>>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A device listed in the registry under a unique name; unlisted on drop.
pub(crate) struct Registration {
    name: CString,
}

impl Registration {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        // No '?' in the name: ext2fs_open2 would parse what follows as I/O options.
        let name = CString::new(format!("rehost-blockdev-{}-{id}", std::process::id()))
            // OK to expect: the formatted name holds no NUL byte.
            .expect("generated device name has no NUL");
        registry().insert(name.clone(), shared);
        Self { name }
    }

    pub(crate) fn name(&self) -> &CStr {
        &self.name
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        registry().remove(&self.name);
    }
}

fn registry() -> std::sync::MutexGuard<'static, BTreeMap<CString, Arc<Shared>>> {
    REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The manager table; a wrapper so it can be a `static` (it holds a raw name pointer).
struct Manager(IoManager);
// SAFETY: the table is never written after initialisation (libext2fs only reads it), and its
// only pointer is to a `'static` C string literal.
unsafe impl Sync for Manager {}

static MANAGER: Manager = Manager(IoManager {
    magic: sys::EXT2_ET_MAGIC_IO_MANAGER,
    name: c"rehost block layer".as_ptr(),
    open: Some(io_open),
    close: Some(io_close),
    set_blksize: Some(io_set_blksize),
    read_blk: Some(io_read_blk),
    write_blk: Some(io_write_blk),
    flush: Some(io_flush),
    write_byte: Some(io_write_byte),
    set_option: Some(io_set_option),
    get_stats: Some(io_get_stats),
    read_blk64: Some(io_read_blk64),
    write_blk64: Some(io_write_blk64),
    discard: Some(io_discard),
    cache_readahead: Some(io_cache_readahead),
    zeroout: Some(io_zeroout),
    reserved: [0; 14],
});

/// The manager to pass to `ext2fs_open2`. libext2fs takes a non-const pointer but never writes
/// through it.
pub(crate) fn manager() -> *mut IoManager {
    (&raw const MANAGER.0).cast_mut()
}

/// Runs a callback body, turning a panic into an error code instead of unwinding into C.
fn guard(f: impl FnOnce() -> Errcode) -> Errcode {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::error!("panic in an ext2fs i/o callback");
        c_long::from(libc::EIO)
    })
}

/// The channel's data and block size, after checking the channel is one of ours.
///
/// # Safety
/// `chan` must be null or a channel libext2fs got from [`io_open`] and has not closed.
unsafe fn channel<'a>(chan: *mut IoChannel) -> Option<(&'a mut ChannelData, u64)> {
    if chan.is_null() {
        return None;
    }
    // SAFETY: non-null and, per the contract, a live channel made by `io_open`.
    let c = unsafe { &*chan };
    if c.magic != sys::EXT2_ET_MAGIC_IO_CHANNEL
        || c.manager != manager()
        || c.private_data.is_null()
    {
        return None;
    }
    let bs = u64::try_from(c.block_size).ok().filter(|&b| b > 0)?;
    // SAFETY: `private_data` was made by `Box::into_raw` in `io_open` and lives until `io_close`;
    // libext2fs calls a channel from one thread at a time.
    let data = unsafe { &mut *c.private_data.cast::<ChannelData>() };
    Some((data, bs))
}

/// Byte offset and length of `count` blocks at `block` (a negative count is a byte count).
fn span(block: u64, count: c_int, block_size: u64) -> Option<(u64, usize)> {
    let offset = block.checked_mul(block_size)?;
    let len = if count < 0 {
        u64::from(count.unsigned_abs())
    } else {
        u64::try_from(count).ok()?.checked_mul(block_size)?
    };
    Some((offset, usize::try_from(len).ok()?))
}

unsafe extern "C" fn io_open(
    name: *const c_char,
    flags: c_int,
    out: *mut *mut IoChannel,
) -> Errcode {
    guard(|| {
        if name.is_null() || out.is_null() {
            return sys::EXT2_ET_BAD_DEVICE_NAME;
        }
        // SAFETY: libext2fs passes the NUL-terminated name given to ext2fs_open2, alive for
        // the duration of this call.
        let name = unsafe { CStr::from_ptr(name) };
        let Some(shared) = registry().get(name).cloned() else {
            return sys::EXT2_ET_BAD_DEVICE_NAME;
        };
        tracing::debug!(
            ?name,
            rw = flags & sys::IO_FLAG_RW != 0,
            "ext2fs opens device"
        );
        let data = Box::new(ChannelData {
            shared,
            stats: IoStats {
                num_fields: 2,
                reserved: 0,
                bytes_read: 0,
                bytes_written: 0,
            },
        });
        let chan = Box::new(IoChannel {
            magic: sys::EXT2_ET_MAGIC_IO_CHANNEL,
            manager: manager(),
            name: name.to_owned().into_raw(),
            block_size: 1024,
            read_error: None,
            write_error: None,
            refcount: 1,
            flags: 0,
            reserved: [0; 14],
            private_data: Box::into_raw(data).cast(),
            app_data: std::ptr::null_mut(),
            align: 0,
        });
        // SAFETY: `out` is non-null and points to libext2fs's channel variable.
        unsafe { *out = Box::into_raw(chan) };
        0
    })
}

unsafe extern "C" fn io_close(chan: *mut IoChannel) -> Errcode {
    guard(|| {
        // SAFETY: libext2fs passes a channel from `io_open` that it has not closed yet.
        if unsafe { channel(chan) }.is_none() {
            return sys::EXT2_ET_MAGIC_IO_CHANNEL;
        }
        // SAFETY: checked above to be our live channel; libext2fs holds no other reference
        // while calling close.
        let refs = unsafe {
            (*chan).refcount -= 1;
            (*chan).refcount
        };
        if refs > 0 {
            return 0;
        }
        // SAFETY: the last reference: the channel, its name and its data were made by
        // `Box::into_raw`/`CString::into_raw` in `io_open` and are freed exactly once here.
        let (chan, data) = unsafe {
            let chan = Box::from_raw(chan);
            drop(CString::from_raw(chan.name));
            let data = Box::from_raw(chan.private_data.cast::<ChannelData>());
            (chan, data)
        };
        drop(chan);
        match data.shared.dev.flush() {
            Ok(()) => 0,
            Err(e) => data.shared.record(e, c_long::from(libc::EIO)),
        }
    })
}

unsafe extern "C" fn io_set_blksize(chan: *mut IoChannel, blksize: c_int) -> Errcode {
    guard(|| {
        // SAFETY: a channel from `io_open`, per libext2fs's calling contract.
        if unsafe { channel(chan) }.is_none() {
            return sys::EXT2_ET_MAGIC_IO_CHANNEL;
        }
        if blksize <= 0 {
            return sys::EXT2_ET_INVALID_ARGUMENT;
        }
        // SAFETY: checked above to be our live channel.
        unsafe { (*chan).block_size = blksize };
        0
    })
}

fn read_at(chan: *mut IoChannel, block: u64, count: c_int, buf: *mut c_void) -> Errcode {
    // SAFETY: a channel from `io_open`, per libext2fs's calling contract.
    let Some((data, bs)) = (unsafe { channel(chan) }) else {
        return sys::EXT2_ET_MAGIC_IO_CHANNEL;
    };
    let Some((offset, len)) = span(block, count, bs) else {
        return sys::EXT2_ET_INVALID_ARGUMENT;
    };
    if len == 0 {
        return 0;
    }
    if buf.is_null() {
        return sys::EXT2_ET_INVALID_ARGUMENT;
    }
    // SAFETY: libext2fs passes a buffer of `count` blocks (or `-count` bytes) at the channel's
    // block size, which is exactly `len`; nothing else uses it during the call.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    match data.shared.dev.read_exact_at(offset, buf) {
        Ok(()) => {
            data.stats.bytes_read = data.stats.bytes_read.saturating_add(len as u64);
            0
        }
        Err(e) => {
            // As unix_io: the caller sees zeroes rather than stale memory.
            buf.fill(0);
            data.shared.record(e, sys::EXT2_ET_SHORT_READ)
        }
    }
}

fn write_at(chan: *mut IoChannel, offset: u64, len: usize, buf: *const c_void) -> Errcode {
    // SAFETY: a channel from `io_open`, per libext2fs's calling contract.
    let Some((data, _)) = (unsafe { channel(chan) }) else {
        return sys::EXT2_ET_MAGIC_IO_CHANNEL;
    };
    if len == 0 {
        return 0;
    }
    if buf.is_null() {
        return sys::EXT2_ET_INVALID_ARGUMENT;
    }
    // SAFETY: libext2fs passes a buffer of exactly `len` bytes (see `span`), unchanged while
    // the call runs.
    let buf = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    match data.shared.dev.write_all_at(offset, buf) {
        Ok(()) => {
            data.stats.bytes_written = data.stats.bytes_written.saturating_add(len as u64);
            0
        }
        Err(e) => data.shared.record(e, sys::EXT2_ET_SHORT_WRITE),
    }
}

fn write_blocks(chan: *mut IoChannel, block: u64, count: c_int, buf: *const c_void) -> Errcode {
    // SAFETY: a channel from `io_open`, per libext2fs's calling contract.
    let Some((_, bs)) = (unsafe { channel(chan) }) else {
        return sys::EXT2_ET_MAGIC_IO_CHANNEL;
    };
    match span(block, count, bs) {
        Some((offset, len)) => write_at(chan, offset, len, buf),
        None => sys::EXT2_ET_INVALID_ARGUMENT,
    }
}

unsafe extern "C" fn io_read_blk(
    chan: *mut IoChannel,
    block: c_ulong,
    count: c_int,
    data: *mut c_void,
) -> Errcode {
    guard(|| read_at(chan, block, count, data))
}

unsafe extern "C" fn io_read_blk64(
    chan: *mut IoChannel,
    block: c_ulonglong,
    count: c_int,
    data: *mut c_void,
) -> Errcode {
    guard(|| read_at(chan, block, count, data))
}

unsafe extern "C" fn io_write_blk(
    chan: *mut IoChannel,
    block: c_ulong,
    count: c_int,
    data: *const c_void,
) -> Errcode {
    guard(|| write_blocks(chan, block, count, data))
}

unsafe extern "C" fn io_write_blk64(
    chan: *mut IoChannel,
    block: c_ulonglong,
    count: c_int,
    data: *const c_void,
) -> Errcode {
    guard(|| write_blocks(chan, block, count, data))
}

unsafe extern "C" fn io_write_byte(
    chan: *mut IoChannel,
    offset: c_ulong,
    count: c_int,
    data: *const c_void,
) -> Errcode {
    guard(|| match usize::try_from(count) {
        Ok(len) => write_at(chan, offset, len, data),
        Err(_) => sys::EXT2_ET_INVALID_ARGUMENT,
    })
}

unsafe extern "C" fn io_flush(chan: *mut IoChannel) -> Errcode {
    guard(|| {
        // SAFETY: a channel from `io_open`, per libext2fs's calling contract.
        let Some((data, _)) = (unsafe { channel(chan) }) else {
            return sys::EXT2_ET_MAGIC_IO_CHANNEL;
        };
        match data.shared.dev.flush() {
            Ok(()) => 0,
            Err(e) => data.shared.record(e, c_long::from(libc::EIO)),
        }
    })
}

unsafe extern "C" fn io_set_option(
    _chan: *mut IoChannel,
    _option: *const c_char,
    _arg: *const c_char,
) -> Errcode {
    // No options (unix_io's "offset" and "cache" make no sense for a block-layer device).
    sys::EXT2_ET_INVALID_ARGUMENT
}

unsafe extern "C" fn io_get_stats(chan: *mut IoChannel, out: *mut *mut IoStats) -> Errcode {
    guard(|| {
        // SAFETY: a channel from `io_open`, per libext2fs's calling contract.
        let Some((data, _)) = (unsafe { channel(chan) }) else {
            return sys::EXT2_ET_MAGIC_IO_CHANNEL;
        };
        if !out.is_null() {
            // SAFETY: `out` is non-null and points to the caller's stats pointer; the stats
            // live in the channel data until close.
            unsafe { *out = &raw mut data.stats };
        }
        0
    })
}

fn range_op(
    chan: *mut IoChannel,
    block: u64,
    count: u64,
    op: impl FnOnce(&dyn BlockWrite, u64, u64) -> disk::Result<()>,
) -> Errcode {
    // SAFETY: a channel from `io_open`, per libext2fs's calling contract.
    let Some((data, bs)) = (unsafe { channel(chan) }) else {
        return sys::EXT2_ET_MAGIC_IO_CHANNEL;
    };
    let (Some(offset), Some(len)) = (block.checked_mul(bs), count.checked_mul(bs)) else {
        return sys::EXT2_ET_INVALID_ARGUMENT;
    };
    match op(&*data.shared.dev, offset, len) {
        Ok(()) => 0,
        Err(e) => data.shared.record(e, sys::EXT2_ET_SHORT_WRITE),
    }
}

unsafe extern "C" fn io_discard(
    chan: *mut IoChannel,
    block: c_ulonglong,
    count: c_ulonglong,
) -> Errcode {
    guard(|| range_op(chan, block, count, |d, o, l| d.discard(o, l)))
}

unsafe extern "C" fn io_zeroout(
    chan: *mut IoChannel,
    block: c_ulonglong,
    count: c_ulonglong,
) -> Errcode {
    guard(|| {
        range_op(chan, block, count, |d, o, l| {
            d.write_zeroes(o, l, ZeroMode::KeepAllocated)
        })
    })
}

unsafe extern "C" fn io_cache_readahead(
    _chan: *mut IoChannel,
    _block: c_ulonglong,
    _count: c_ulonglong,
) -> Errcode {
    // No cache to fill; a hint only.
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_counts_blocks_or_bytes() {
        assert_eq!(span(3, 2, 1024), Some((3072, 2048)));
        assert_eq!(span(1, -1024, 1024), Some((1024, 1024)));
        assert_eq!(span(0, 0, 4096), Some((0, 0)));
        assert_eq!(span(u64::MAX, 1, 4096), None);
    }

    #[test]
    fn registry_unlists_on_drop() {
        let dev: Arc<dyn BlockWrite> =
            Arc::new(disk::mem::MemDisk::zeroed(4096).expect("small disk"));
        let reg = Registration::new(Shared::new(dev));
        let name = reg.name().to_owned();
        assert!(registry().contains_key(&name));
        drop(reg);
        assert!(!registry().contains_key(&name));
    }
}
