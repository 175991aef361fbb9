//! Links libext2fs, libcom_err and libntfs-3g (Debian: `libext2fs-dev`, `comerr-dev`,
//! `ntfs-3g-dev`) through pkg-config.

fn main() {
    // 1.46 is the first release whose ext2fs_link adds entries to htree directories itself.
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("1.46")
        .probe("ext2fs")
    {
        panic!("libext2fs >= 1.46 not found via pkg-config (install libext2fs-dev): {e}");
    }
    if let Err(e) = pkg_config::probe_library("com_err") {
        panic!("libcom_err not found via pkg-config (install comerr-dev): {e}");
    }
    if let Err(e) = pkg_config::probe_library("libntfs-3g") {
        panic!("libntfs-3g not found via pkg-config (install ntfs-3g-dev): {e}");
    }
}
