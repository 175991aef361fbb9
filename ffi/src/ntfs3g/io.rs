//! Our `struct ntfs_device_operations`: every byte libntfs-3g reads or writes goes to a
//! [`disk::block::BlockWrite`] device (raw, qcow2, NBD, a [`disk::txn::Transaction`]).
//!
//! The device's `d_private` points at a [`Shared`] that the owning [`super::Ntfs3g`] keeps alive
//! (an `Arc`) for longer than libntfs-3g holds the device. Callbacks follow the POSIX convention
//! libntfs-3g expects (-1 and `errno`), catch panics so none unwinds into C, and record the
//! device's [`disk::Error`] so the caller can report it instead of a bare errno.
//!
//! Writes pass a *gate*: while it is closed (during the mount's own checks) a write fails with
//! `EROFS` and is remembered, so a refused mount provably wrote nothing (see `super::Ntfs3g`).

use std::ffi::{c_int, c_ulong, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use disk::block::BlockWrite;

use super::sys::{self, DeviceOps, NtfsDevice};

/// The device behind one mounted volume.
pub(crate) struct Shared {
    pub(crate) dev: Arc<dyn BlockWrite>,
    last_error: Mutex<Option<disk::Error>>,
    /// Writes reach the device only while this is set.
    writes_open: AtomicBool,
    /// A write was refused by the closed gate.
    gated_write: AtomicBool,
    /// The position of the `seek`/`read`/`write` callbacks.
    pos: Mutex<u64>,
}

impl Shared {
    pub(crate) fn new(dev: Arc<dyn BlockWrite>) -> Arc<Self> {
        Arc::new(Self {
            dev,
            last_error: Mutex::new(None),
            writes_open: AtomicBool::new(false),
            gated_write: AtomicBool::new(false),
            pos: Mutex::new(0),
        })
    }

    /// Lets writes through (`true`) or refuses them with `EROFS` (`false`).
    pub(crate) fn set_writes_open(&self, open: bool) {
        self.writes_open.store(open, Ordering::SeqCst);
    }

    /// Whether a write was refused by the closed gate since the last call; clears the mark.
    pub(crate) fn take_gated_write(&self) -> bool {
        self.gated_write.swap(false, Ordering::SeqCst)
    }

    /// The device error behind the last failed callback, if any.
    pub(crate) fn take_error(&self) -> Option<disk::Error> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn record(&self, e: disk::Error) -> c_int {
        let code = match &e {
            disk::Error::ReadOnly => libc::EROFS,
            _ => libc::EIO,
        };
        tracing::debug!(error = %e, code, "ntfs-3g device callback failed");
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(e);
        code
    }

    /// Reads up to `buf.len()` bytes at `offset`, short at the end of the device.
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, c_int> {
        let size = self.dev.size();
        if offset >= size {
            return Ok(0);
        }
        let avail = usize::try_from(size - offset).unwrap_or(usize::MAX);
        let n = buf.len().min(avail);
        // OK to slice: n <= buf.len().
        match self.dev.read_exact_at(offset, &mut buf[..n]) {
            Ok(()) => Ok(n),
            Err(e) => Err(self.record(e)),
        }
    }

    /// Writes all of `buf` at `offset`, refusing what passes the end of the device.
    fn pwrite(&self, buf: &[u8], offset: u64) -> Result<usize, c_int> {
        if !self.writes_open.load(Ordering::SeqCst) {
            self.gated_write.store(true, Ordering::SeqCst);
            tracing::debug!(offset, len = buf.len(), "ntfs-3g write refused by the gate");
            return Err(libc::EROFS);
        }
        let end = u64::try_from(buf.len())
            .ok()
            .and_then(|l| offset.checked_add(l));
        if end.is_none_or(|e| e > self.dev.size()) {
            return Err(libc::ENOSPC);
        }
        match self.dev.write_all_at(offset, buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => Err(self.record(e)),
        }
    }
}

static OPS: OpsTable = OpsTable(DeviceOps {
    open: Some(dev_open),
    close: Some(dev_close),
    seek: Some(dev_seek),
    read: Some(dev_read),
    write: Some(dev_write),
    pread: Some(dev_pread),
    pwrite: Some(dev_pwrite),
    sync: Some(dev_sync),
    stat: Some(dev_stat),
    ioctl: Some(dev_ioctl),
});

/// The operations table; a wrapper so it can be a `static` (it holds function pointers only).
struct OpsTable(DeviceOps);
// SAFETY: the table is never written (libntfs-3g only reads `d_ops`) and holds only function
// pointers, which are freely shareable.
unsafe impl Sync for OpsTable {}

/// The table to pass to `ntfs_device_alloc`, which takes a non-const pointer but never writes
/// through it.
pub(crate) fn ops() -> *mut DeviceOps {
    (&raw const OPS.0).cast_mut()
}

fn set_errno(code: c_int) {
    // SAFETY: `__errno_location` returns this thread's errno slot, always valid to write.
    unsafe { *libc::__errno_location() = code };
}

/// Runs a callback body: `Err(errno)` becomes -1 with `errno` set; a panic becomes `EIO`.
fn guard<T: From<i8>>(f: impl FnOnce() -> Result<T, c_int>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(code)) => {
            set_errno(code);
            T::from(-1)
        }
        Err(_) => {
            tracing::error!("panic in an ntfs-3g device callback");
            set_errno(libc::EIO);
            T::from(-1)
        }
    }
}

/// The device's [`Shared`], after checking the device is one of ours.
///
/// # Safety
/// `dev` must be null or a device from `ntfs_device_alloc` whose `d_private` is null or a
/// `Shared` kept alive by its `Ntfs3g`.
unsafe fn shared<'a>(dev: *mut NtfsDevice) -> Result<&'a Shared, c_int> {
    if dev.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: non-null and, per the contract, a live device.
    let d = unsafe { &*dev };
    if d.d_ops != ops() || d.d_private.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: `d_private` is `Arc::as_ptr` of a `Shared` that outlives the device (contract).
    Ok(unsafe { &*d.d_private.cast::<Shared>() })
}

/// Sets or clears bits of `d_state`.
///
/// # Safety
/// As [`shared`], and no other reference to the device's state is live.
unsafe fn state(dev: *mut NtfsDevice, set: c_ulong, clear: c_ulong) {
    // SAFETY: per the contract, a live device; libntfs-3g is single-threaded per volume.
    unsafe { (*dev).d_state = ((*dev).d_state | set) & !clear };
}

fn count_len(count: i64) -> Result<usize, c_int> {
    usize::try_from(count).map_err(|_| libc::EINVAL)
}

fn offset_of(offset: i64) -> Result<u64, c_int> {
    u64::try_from(offset).map_err(|_| libc::EINVAL)
}

fn as_i64(n: usize) -> i64 {
    // Buffer lengths never exceed isize::MAX.
    i64::try_from(n).unwrap_or(i64::MAX)
}

unsafe extern "C" fn dev_open(dev: *mut NtfsDevice, flags: c_int) -> c_int {
    guard(|| {
        // SAFETY: libntfs-3g passes the device it allocated with our table.
        let sh = unsafe { shared(dev) }?;
        let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY;
        tracing::debug!(read_only, "ntfs-3g opens device");
        *sh.pos.lock().unwrap_or_else(PoisonError::into_inner) = 0;
        let ro = if read_only { sys::ND_READ_ONLY } else { 0 };
        // SAFETY: checked to be our live device above.
        unsafe { state(dev, sys::ND_OPEN | ro, sys::ND_DIRTY) };
        Ok(0)
    })
}

unsafe extern "C" fn dev_close(dev: *mut NtfsDevice) -> c_int {
    guard(|| {
        // SAFETY: libntfs-3g passes the device it allocated with our table.
        let sh = unsafe { shared(dev) }?;
        // SAFETY: checked to be our live device above.
        unsafe { state(dev, 0, sys::ND_OPEN | sys::ND_READ_ONLY | sys::ND_DIRTY) };
        if sh.writes_open.load(Ordering::SeqCst) {
            sh.dev.flush().map_err(|e| sh.record(e))?;
        }
        Ok(0)
    })
}

unsafe extern "C" fn dev_seek(dev: *mut NtfsDevice, offset: i64, whence: c_int) -> i64 {
    guard(|| {
        // SAFETY: libntfs-3g passes the device it allocated with our table.
        let sh = unsafe { shared(dev) }?;
        let mut pos = sh.pos.lock().unwrap_or_else(PoisonError::into_inner);
        let base = match whence {
            libc::SEEK_SET => 0,
            libc::SEEK_CUR => i64::try_from(*pos).map_err(|_| libc::EINVAL)?,
            libc::SEEK_END => i64::try_from(sh.dev.size()).map_err(|_| libc::EINVAL)?,
            _ => return Err(libc::EINVAL),
        };
        let new = base.checked_add(offset).ok_or(libc::EINVAL)?;
        *pos = offset_of(new)?;
        Ok(new)
    })
}

unsafe extern "C" fn dev_read(dev: *mut NtfsDevice, buf: *mut c_void, count: i64) -> i64 {
    guard(|| {
        // SAFETY: libntfs-3g passes the device it allocated with our table.
        let sh = unsafe { shared(dev) }?;
        let len = count_len(count)?;
        if buf.is_null() && len > 0 {
            return Err(libc::EINVAL);
        }
        // SAFETY: libntfs-3g passes a writable buffer of `count` bytes.
        let buf = unsafe { slice_mut(buf, len) };
        let mut pos = sh.pos.lock().unwrap_or_else(PoisonError::into_inner);
        let n = sh.pread(buf, *pos)?;
        *pos = pos.saturating_add(n as u64);
        Ok(as_i64(n))
    })
}

unsafe extern "C" fn dev_write(dev: *mut NtfsDevice, buf: *const c_void, count: i64) -> i64 {
    guard(|| {
        // SAFETY: libntfs-3g passes the device it allocated with our table.
        let sh = unsafe { shared(dev) }?;
        let len = count_len(count)?;
        if buf.is_null() && len > 0 {
            return Err(libc::EINVAL);
        }
        // SAFETY: libntfs-3g passes a readable buffer of `count` bytes.
        let buf = unsafe { slice(buf, len) };
        let mut pos = sh.pos.lock().unwrap_or_else(PoisonError::into_inner);
        let n = sh.pwrite(buf, *pos)?;
        *pos = pos.saturating_add(n as u64);
        // SAFETY: our live device (checked by `shared`).
        unsafe { state(dev, sys::ND_DIRTY, 0) };
        Ok(as_i64(n))
    })
}

unsafe extern "C" fn dev_pread(
    dev: *mut NtfsDevice,
    buf: *mut c_void,
    count: i64,
    offset: i64,
) -> i64 {
    guard(|| {
        // SAFETY: libntfs-3g passes the device it allocated with our table.
        let sh = unsafe { shared(dev) }?;
        let len = count_len(count)?;
        if buf.is_null() && len > 0 {
            return Err(libc::EINVAL);
        }
        // SAFETY: libntfs-3g passes a writable buffer of `count` bytes.
        let buf = unsafe { slice_mut(buf, len) };
        sh.pread(buf, offset_of(offset)?).map(as_i64)
    })
}

unsafe extern "C" fn dev_pwrite(
    dev: *mut NtfsDevice,
    buf: *const c_void,
    count: i64,
    offset: i64,
) -> i64 {
    guard(|| {
        // SAFETY: libntfs-3g passes the device it allocated with our table.
        let sh = unsafe { shared(dev) }?;
        let len = count_len(count)?;
        if buf.is_null() && len > 0 {
            return Err(libc::EINVAL);
        }
        // SAFETY: libntfs-3g passes a readable buffer of `count` bytes.
        let buf = unsafe { slice(buf, len) };
        let n = sh.pwrite(buf, offset_of(offset)?)?;
        // SAFETY: our live device (checked by `shared`).
        unsafe { state(dev, sys::ND_DIRTY, 0) };
        Ok(as_i64(n))
    })
}

unsafe extern "C" fn dev_sync(dev: *mut NtfsDevice) -> c_int {
    guard(|| {
        // SAFETY: libntfs-3g passes the device it allocated with our table.
        let sh = unsafe { shared(dev) }?;
        if sh.writes_open.load(Ordering::SeqCst) {
            sh.dev.flush().map_err(|e| sh.record(e))?;
        }
        // SAFETY: our live device (checked by `shared`).
        unsafe { state(dev, 0, sys::ND_DIRTY) };
        Ok(0)
    })
}

unsafe extern "C" fn dev_stat(dev: *mut NtfsDevice, out: *mut libc::stat) -> c_int {
    guard(|| {
        // SAFETY: libntfs-3g passes the device it allocated with our table.
        let sh = unsafe { shared(dev) }?;
        if out.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: `libc::stat` is plain old data, for which all-zero bytes are valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_mode = libc::S_IFREG | 0o600;
        st.st_size = i64::try_from(sh.dev.size()).map_err(|_| libc::EOVERFLOW)?;
        st.st_blksize = 4096;
        // SAFETY: `out` is non-null and points to the caller's `struct stat`.
        unsafe { out.write(st) };
        Ok(0)
    })
}

unsafe extern "C" fn dev_ioctl(dev: *mut NtfsDevice, request: c_ulong, argp: *mut c_void) -> c_int {
    guard(|| {
        // SAFETY: libntfs-3g passes the device it allocated with our table.
        let sh = unsafe { shared(dev) }?;
        if argp.is_null() {
            return Err(libc::EINVAL);
        }
        match request {
            sys::BLKGETSIZE64 => {
                // SAFETY: for BLKGETSIZE64 the argument is a `u64 *`.
                unsafe { argp.cast::<u64>().write_unaligned(sh.dev.size()) };
                Ok(0)
            }
            libc::BLKSSZGET => {
                let ss = c_int::try_from(sh.dev.logical_sector_size()).unwrap_or(512);
                // SAFETY: for BLKSSZGET the argument is an `int *`.
                unsafe { argp.cast::<c_int>().write_unaligned(ss) };
                Ok(0)
            }
            _ => Err(libc::ENOTTY),
        }
    })
}

/// # Safety
/// `buf` points to `len` writable bytes (or `len` is 0), not aliased for the call.
unsafe fn slice_mut<'a>(buf: *mut c_void, len: usize) -> &'a mut [u8] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: per the contract.
    unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) }
}

/// # Safety
/// `buf` points to `len` readable bytes (or `len` is 0).
unsafe fn slice<'a>(buf: *const c_void, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: per the contract.
    unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }
}
