//! LVM2 (under construction).
