//! A builder's output as data: the disk layout and what goes in each partition. Building a plan
//! is cheap and has no side effects, so the cache key is computed from it before anything runs.

use crate::tree::Tree;

/// Partition-table kind and identifier.
#[derive(Debug, Clone)]
pub(crate) enum Table {
    /// MBR with this disk signature (offset 440).
    Mbr { signature: u32 },
    /// GPT with this disk GUID.
    Gpt { disk_guid: &'static str },
}

/// Code written to the first 440 bytes of the disk.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BootCode {
    /// Zeros (UEFI disks).
    None,
    /// GRUB 2's `boot.img` from the host's grub-pc-bin.
    Grub,
    /// A stand-in for the Windows MBR code (see [`crate::pe::windows_mbr_code`]).
    Windows,
}

/// Partition type, written as MBR type byte or GPT type GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartType {
    /// Linux filesystem (0x83 / 0FC63DAF-…).
    Linux,
    /// Linux swap (0x82 / 0657FD6D-…).
    Swap,
    /// Linux LVM (0x8e / E6D6D379-…).
    Lvm,
    /// EFI system partition (0xef / C12A7328-…).
    Esp,
    /// BIOS boot partition (GPT only, 21686148-…).
    BiosBoot,
    /// NTFS / basic data (0x07 / EBD0A0A2-…).
    Ntfs,
    /// Microsoft reserved (GPT only, E3C9E316-…).
    Msr,
    /// MBR extended partition container (0x05).
    Extended,
}

impl PartType {
    /// The sfdisk `type=` value for this table kind.
    pub(crate) fn sfdisk(self, gpt: bool) -> &'static str {
        match (self, gpt) {
            (Self::Linux, false) => "83",
            (Self::Swap, false) => "82",
            (Self::Lvm, false) => "8e",
            (Self::Esp, false) => "ef",
            (Self::Ntfs, false) => "7",
            (Self::Extended, _) => "5",
            (Self::BiosBoot | Self::Msr, false) => "0",
            (Self::Linux, true) => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            (Self::Swap, true) => "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
            (Self::Lvm, true) => "E6D6D379-F507-44C2-A23C-238F2A3DF928",
            (Self::Esp, true) => "C12A7328-F81F-11D2-BA4B-00A0C93EC3B8",
            (Self::BiosBoot, true) => "21686148-6449-6E6F-744E-656564454649",
            (Self::Ntfs, true) => "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
            (Self::Msr, true) => "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
        }
    }
}

/// A filesystem kind the builders can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FsKind {
    /// ext4 via `mke2fs -d`.
    Ext4,
    /// XFS via `mkfs.xfs -p protofile`, current defaults (RHEL 9-like).
    Xfs,
    /// XFS without the features RHEL 7's kernel lacks (bigtime, inobtcount, reflink, sparse inodes).
    XfsRhel7,
    /// btrfs via `mkfs.btrfs --rootdir`.
    Btrfs,
    /// FAT32 via `mkfs.vfat` + mtools.
    Vfat,
    /// NTFS via `mkntfs` + an ntfs-3g mount (needs root).
    Ntfs,
}

/// A filesystem to make: kind, identity and files.
#[derive(Debug, Clone)]
pub(crate) struct FsSpec {
    /// Which filesystem.
    pub(crate) kind: FsKind,
    /// UUID (ext4/xfs/btrfs), volume id `XXXX-XXXX` (vfat), ignored for NTFS.
    pub(crate) uuid: &'static str,
    /// Volume label ("" for none).
    pub(crate) label: &'static str,
    /// The files.
    pub(crate) tree: Tree,
}

/// What a partition or logical volume holds.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// Nothing (zeros): MSR, BIOS boot, extended containers.
    Empty,
    /// A filesystem.
    Fs(FsSpec),
    /// A swap area with this UUID.
    Swap { uuid: &'static str },
    /// An LVM2 physical volume.
    Lvm(crate::lvm::VgSpec),
}

/// One partition.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    /// Partition number as the OS names it (1-based; 5+ are MBR logical partitions).
    pub(crate) number: u32,
    /// First sector, in MiB from the disk start.
    pub(crate) start_mib: u64,
    /// Size in MiB.
    pub(crate) size_mib: u64,
    /// Type.
    pub(crate) ptype: PartType,
    /// GPT partition name ("" on MBR).
    pub(crate) name: &'static str,
    /// GPT unique partition GUID (ignored on MBR).
    pub(crate) guid: &'static str,
    /// MBR active flag.
    pub(crate) bootable: bool,
    /// Content.
    pub(crate) content: Content,
}

/// The whole image.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Image name.
    pub(crate) name: &'static str,
    /// Virtual size in MiB.
    pub(crate) size_mib: u64,
    /// Partition table.
    pub(crate) table: Table,
    /// Boot code in the first 440 bytes.
    pub(crate) boot_code: BootCode,
    /// Partitions, in table order.
    pub(crate) parts: Vec<Part>,
}

impl Plan {
    /// Every filesystem in the plan (inside LVs too).
    pub(crate) fn filesystems(&self) -> Vec<&FsSpec> {
        let mut out = Vec::new();
        for p in &self.parts {
            match &p.content {
                Content::Fs(fs) => out.push(fs),
                Content::Lvm(vg) => {
                    for lv in &vg.lvs {
                        if let Content::Fs(fs) = &lv.content {
                            out.push(fs);
                        }
                    }
                }
                Content::Empty | Content::Swap { .. } => {}
            }
        }
        out
    }

    /// Whether building this plan needs root (NTFS content goes in through an ntfs-3g mount).
    pub(crate) fn needs_root(&self) -> bool {
        self.filesystems().iter().any(|f| f.kind == FsKind::Ntfs)
    }

    /// The tools this plan uses, for the cache key and for early "not installed" errors.
    pub(crate) fn tools(&self) -> Vec<crate::tools::Tool> {
        use crate::tools::*;
        let mut t = vec![SFDISK];
        for fs in self.filesystems() {
            t.extend(match fs.kind {
                FsKind::Ext4 => &[MKE2FS][..],
                FsKind::Xfs | FsKind::XfsRhel7 => &[MKFS_XFS],
                FsKind::Btrfs => &[MKFS_BTRFS],
                FsKind::Vfat => &[MKFS_VFAT, MCOPY],
                FsKind::Ntfs => &[MKNTFS, NTFS_3G],
            });
            for (_, node) in fs.tree.entries() {
                match node {
                    crate::tree::Node::File {
                        data: crate::tree::Data::Hive(_),
                        ..
                    } => t.push(HIVEXREGEDIT),
                    crate::tree::Node::File {
                        data: crate::tree::Data::RpmDb,
                        ..
                    } => t.push(PYTHON3),
                    _ => {}
                }
            }
        }
        let swap = self.parts.iter().any(|p| match &p.content {
            Content::Swap { .. } => true,
            Content::Lvm(vg) => vg
                .lvs
                .iter()
                .any(|l| matches!(l.content, Content::Swap { .. })),
            _ => false,
        });
        if swap {
            t.push(MKSWAP);
        }
        t.sort();
        t.dedup();
        t
    }
}
