//! Hand-written declarations for the parts of libntfs-3g (2022.10.3, soname 89) this module
//! uses.
//!
//! Layouts follow `/usr/include/ntfs-3g/{device,volume,inode,attrib,dir,security,types}.h`. Only
//! the structures we build ourselves are spelled out whole (`ntfs_device_operations`,
//! `SECURITY_CONTEXT`); of the library's own objects we declare just the leading fields we read
//! (a prefix of a `repr(C)` struct has the same offsets as the full one), the rest stay opaque.

use std::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};

/// `device.h`: `struct ntfs_device` (complete).
#[repr(C)]
pub(crate) struct NtfsDevice {
    pub(crate) d_ops: *mut DeviceOps,
    pub(crate) d_state: c_ulong,
    pub(crate) d_name: *mut c_char,
    pub(crate) d_private: *mut c_void,
    pub(crate) d_heads: c_int,
    pub(crate) d_sectors_per_track: c_int,
}

/// `device.h`: bit numbers of `d_state` (`ND_Open`, `ND_ReadOnly`, `ND_Dirty`).
pub(crate) const ND_OPEN: c_ulong = 1 << 0;
pub(crate) const ND_READ_ONLY: c_ulong = 1 << 1;
pub(crate) const ND_DIRTY: c_ulong = 1 << 2;

/// `linux/fs.h`: `BLKGETSIZE64`, `_IOR(0x12, 114, size_t)` (the device size in bytes).
pub(crate) const BLKGETSIZE64: std::ffi::c_ulong = 0x8008_1272;

/// `device.h`: `struct ntfs_device_operations` (complete).
#[repr(C)]
pub(crate) struct DeviceOps {
    pub(crate) open: Option<unsafe extern "C" fn(*mut NtfsDevice, c_int) -> c_int>,
    pub(crate) close: Option<unsafe extern "C" fn(*mut NtfsDevice) -> c_int>,
    pub(crate) seek: Option<unsafe extern "C" fn(*mut NtfsDevice, i64, c_int) -> i64>,
    pub(crate) read: Option<unsafe extern "C" fn(*mut NtfsDevice, *mut c_void, i64) -> i64>,
    pub(crate) write: Option<unsafe extern "C" fn(*mut NtfsDevice, *const c_void, i64) -> i64>,
    pub(crate) pread: Option<unsafe extern "C" fn(*mut NtfsDevice, *mut c_void, i64, i64) -> i64>,
    pub(crate) pwrite:
        Option<unsafe extern "C" fn(*mut NtfsDevice, *const c_void, i64, i64) -> i64>,
    pub(crate) sync: Option<unsafe extern "C" fn(*mut NtfsDevice) -> c_int>,
    pub(crate) stat: Option<unsafe extern "C" fn(*mut NtfsDevice, *mut libc::stat) -> c_int>,
    pub(crate) ioctl: Option<unsafe extern "C" fn(*mut NtfsDevice, c_ulong, *mut c_void) -> c_int>,
}

/// `volume.h`: the leading fields of `struct _ntfs_volume`.
#[repr(C)]
pub(crate) struct Volume {
    pub(crate) dev: *mut NtfsDevice,
    pub(crate) vol_name: *mut c_char,
    pub(crate) state: c_ulong,
}

/// `volume.h`: bit `NV_CaseSensitive` of `ntfs_volume.state`.
pub(crate) const NV_CASE_SENSITIVE: c_ulong = 1 << 1;

/// `volume.h`: `ntfs_mount_flags` (`NTFS_MNT_NONE`: read-write, no recovery, hibernation
/// checked).
pub(crate) const NTFS_MNT_NONE: c_uint = 0;
/// `volume.h`: `NTFS_MNT_RDONLY`.
pub(crate) const NTFS_MNT_RDONLY: c_uint = 0x0000_0001;

/// `inode.h`: the leading fields of `struct _ntfs_inode`.
#[repr(C)]
pub(crate) struct Inode {
    pub(crate) mft_no: u64,
    /// The in-memory copy of the base MFT record (`MFT_RECORD *`), at least 1 KiB.
    pub(crate) mrec: *const u8,
    pub(crate) vol: *mut Volume,
    pub(crate) state: c_ulong,
    /// `FILE_ATTR_FLAGS`, copied from `$STANDARD_INFORMATION`.
    pub(crate) flags: u32,
}

/// `layout.h`: `MFT_RECORD.link_count` (le16 at byte 18).
pub(crate) const MFT_RECORD_LINK_COUNT_OFFSET: usize = 18;
/// `layout.h`: `MFT_RECORD.flags` (le16 at byte 22).
pub(crate) const MFT_RECORD_FLAGS_OFFSET: usize = 22;
/// `layout.h`: `MFT_RECORD_IS_DIRECTORY`.
pub(crate) const MFT_RECORD_IS_DIRECTORY: u16 = 0x0002;

/// `layout.h`: `FILE_ATTR_SYSTEM`.
pub(crate) const FILE_ATTR_SYSTEM: u32 = 0x0000_0004;
/// `layout.h`: `FILE_ATTR_REPARSE_POINT`.
pub(crate) const FILE_ATTR_REPARSE_POINT: u32 = 0x0000_0400;
/// `layout.h`: `FILE_ATTR_ENCRYPTED`.
pub(crate) const FILE_ATTR_ENCRYPTED: u32 = 0x0000_4000;

/// `layout.h`: `FILE_root`, the MFT record of the root directory.
pub(crate) const FILE_ROOT: u64 = 5;
/// `layout.h`: `FILE_NAME_DOS`, a DOS 8.3 alias of a name listed separately.
pub(crate) const FILE_NAME_DOS: c_int = 2;

/// `layout.h`: `ATTR_TYPES` we open.
pub(crate) const AT_DATA: u32 = 0x80;
pub(crate) const AT_REPARSE_POINT: u32 = 0xc0;

/// `layout.h`: `MREF()` keeps the low 48 bits of an MFT reference (the record number).
pub(crate) const MFT_REF_MASK: u64 = 0x0000_FFFF_FFFF_FFFF;

/// `attrib.h`: the leading fields of `struct _ntfs_attr`.
#[repr(C)]
pub(crate) struct Attr {
    pub(crate) rl: *mut c_void,
    pub(crate) ni: *mut Inode,
    pub(crate) type_: u32,
    /// `ATTR_FLAGS` (a packed 16-bit enum).
    pub(crate) data_flags: u16,
    pub(crate) name: *mut u16,
    pub(crate) name_len: u32,
    pub(crate) state: c_ulong,
    pub(crate) allocated_size: i64,
    pub(crate) data_size: i64,
    pub(crate) initialized_size: i64,
    pub(crate) compressed_size: i64,
}

/// `attrib.h`: bit `NA_NonResident` of `ntfs_attr.state`.
pub(crate) const NA_NON_RESIDENT: c_ulong = 1 << 1;
/// `layout.h`: `ATTR_COMPRESSION_MASK` and `ATTR_IS_SPARSE` in `ntfs_attr.data_flags`.
pub(crate) const ATTR_COMPRESSION_MASK: u16 = 0x00ff;
pub(crate) const ATTR_IS_SPARSE: u16 = 0x8000;

/// `security.h`: `struct SECURITY_CONTEXT` (complete; `MAPCOUNT` is 2).
#[repr(C)]
pub(crate) struct SecurityContext {
    pub(crate) vol: *mut Volume,
    pub(crate) mapping: [*mut c_void; 2],
    /// Points to the caller's `struct PERMISSIONS_CACHE *`, which may be null.
    pub(crate) pseccache: *mut *mut c_void,
    pub(crate) uid: libc::uid_t,
    pub(crate) gid: libc::gid_t,
    pub(crate) tid: libc::pid_t,
    pub(crate) umask: libc::mode_t,
}

/// `dir.h`: `ntfs_filldir_t`.
pub(crate) type FillDir = unsafe extern "C" fn(
    dirent: *mut c_void,
    name: *const u16,
    name_len: c_int,
    name_type: c_int,
    pos: i64,
    mref: u64,
    dt_type: c_uint,
) -> c_int;

/// `dir.h`: `NTFS_DT_DIR`, `NTFS_DT_REG`.
pub(crate) const NTFS_DT_DIR: c_uint = 4;
pub(crate) const NTFS_DT_REG: c_uint = 8;

unsafe extern "C" {
    /// `attrib.h`: the empty name of unnamed attributes (a sentinel compared by address).
    pub(crate) static mut AT_UNNAMED: [u16; 1];

    pub(crate) fn ntfs_device_alloc(
        name: *const c_char,
        state: c_long,
        dops: *mut DeviceOps,
        priv_data: *mut c_void,
    ) -> *mut NtfsDevice;
    pub(crate) fn ntfs_device_free(dev: *mut NtfsDevice) -> c_int;
    pub(crate) fn ntfs_device_mount(dev: *mut NtfsDevice, flags: c_uint) -> *mut Volume;
    pub(crate) fn ntfs_umount(vol: *mut Volume, force: c_int) -> c_int;
    /// Builds the lower-case table and turns case sensitivity off.
    pub(crate) fn ntfs_set_ignore_case(vol: *mut Volume) -> c_int;

    pub(crate) fn ntfs_inode_open(vol: *mut Volume, mref: u64) -> *mut Inode;
    pub(crate) fn ntfs_inode_close(ni: *mut Inode) -> c_int;
    pub(crate) fn ntfs_inode_lookup_by_name(
        dir_ni: *mut Inode,
        uname: *const u16,
        uname_len: c_int,
    ) -> u64;
    /// Stamps the times chosen by `mask` (`ntfs_time_update_flags`) with "now".
    pub(crate) fn ntfs_inode_update_times(ni: *mut Inode, mask: c_int);
    pub(crate) fn ntfs_inode_get_times(ni: *mut Inode, value: *mut c_char, size: usize) -> c_int;
    pub(crate) fn ntfs_inode_set_times(
        ni: *mut Inode,
        value: *const c_char,
        size: usize,
        flags: c_int,
    ) -> c_int;

    pub(crate) fn ntfs_create(
        dir_ni: *mut Inode,
        securid: u32,
        name: *const u16,
        name_len: u8,
        type_: libc::mode_t,
    ) -> *mut Inode;
    pub(crate) fn ntfs_delete(
        vol: *mut Volume,
        path: *const c_char,
        ni: *mut Inode,
        dir_ni: *mut Inode,
        name: *const u16,
        name_len: u8,
    ) -> c_int;
    pub(crate) fn ntfs_link(ni: *mut Inode, dir_ni: *mut Inode, name: *const u16, len: u8)
    -> c_int;
    pub(crate) fn ntfs_check_empty_dir(ni: *mut Inode) -> c_int;
    pub(crate) fn ntfs_readdir(
        dir_ni: *mut Inode,
        pos: *mut i64,
        dirent: *mut c_void,
        filldir: FillDir,
    ) -> c_int;

    pub(crate) fn ntfs_attr_open(ni: *mut Inode, type_: u32, name: *mut u16, len: u32)
    -> *mut Attr;
    pub(crate) fn ntfs_attr_close(na: *mut Attr);
    pub(crate) fn ntfs_attr_pread(na: *mut Attr, pos: i64, count: i64, buf: *mut c_void) -> i64;
    pub(crate) fn ntfs_attr_pwrite(na: *mut Attr, pos: i64, count: i64, buf: *const c_void) -> i64;
    pub(crate) fn ntfs_attr_truncate(na: *mut Attr, newsize: i64) -> c_int;

    pub(crate) fn ntfs_inherited_id(
        scx: *mut SecurityContext,
        dir_ni: *mut Inode,
        fordir: c_int,
    ) -> u32;
}
