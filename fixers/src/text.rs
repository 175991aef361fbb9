//! Line-preserving text edits: configuration files are changed one token or line at a time, so
//! every untouched byte stays as it was (comments, spacing, line endings).

/// Most lines edited in one file (house style S12); longer files are left alone.
pub const MAX_LINES: usize = 20_000;

/// The lines of `text`, each with its terminator.
pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
}

/// Splits a line into its body and its terminator (`\n`, `\r\n` or nothing).
#[must_use]
pub fn split_eol(line: &str) -> (&str, &str) {
    if let Some(b) = line.strip_suffix("\r\n") {
        (b, "\r\n")
    } else if let Some(b) = line.strip_suffix('\n') {
        (b, "\n")
    } else {
        (line, "")
    }
}

/// Byte spans of the whitespace-separated tokens of `s`.
#[must_use]
pub fn token_spans(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(st)) => {
                out.push((st, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(st) = start {
        out.push((st, s.len()));
    }
    out
}

/// Replaces the `n`th (0-based) whitespace-separated token of `s` using `f`; `None` if there is
/// no such token or `f` declines.
pub fn replace_token(s: &str, n: usize, f: impl FnOnce(&str) -> Option<String>) -> Option<String> {
    let &(a, b) = token_spans(s).get(n)?;
    let new = f(s.get(a..b)?)?;
    Some(format!("{}{new}{}", s.get(..a)?, s.get(b..)?))
}

/// Replaces every whitespace-separated token equal to `from` by `to`, in one pass.
#[must_use]
pub fn replace_word(s: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for (a, b) in token_spans(s) {
        if s.get(a..b) == Some(from) {
            out.push_str(s.get(last..a).unwrap_or_default());
            out.push_str(to);
            last = b;
        }
    }
    out.push_str(s.get(last..).unwrap_or_default());
    out
}

/// Rewrites the values of kernel parameters named in `keys` (`root`, `resume`) in a command
/// line fragment; `f(key, value)` returns the new value. `None` when nothing changed.
pub fn map_params(
    args: &str,
    keys: &[&str],
    mut f: impl FnMut(&str, &str) -> Option<String>,
) -> Option<String> {
    let mut out = String::with_capacity(args.len());
    let mut last = 0;
    let mut changed = false;
    for (a, b) in token_spans(args) {
        let Some(tok) = args.get(a..b) else { continue };
        let Some((k, v)) = tok.split_once('=') else {
            continue;
        };
        if !keys.contains(&k) {
            continue;
        }
        if let Some(nv) = f(k, v)
            && nv != v
        {
            out.push_str(args.get(last..a)?);
            out.push_str(k);
            out.push('=');
            out.push_str(&nv);
            last = b;
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    out.push_str(args.get(last..)?);
    Some(out)
}

/// True if some token of `args` satisfies `pred`.
pub fn has_param(args: &str, pred: impl Fn(&str) -> bool) -> bool {
    token_spans(args)
        .into_iter()
        .filter_map(|(a, b)| args.get(a..b))
        .any(pred)
}

/// Appends `extra` tokens after the last token of `args`, keeping trailing whitespace.
#[must_use]
pub fn append_params(args: &str, extra: &[String]) -> String {
    let body = args.trim_end();
    let tail = &args[body.len()..];
    let joined = extra.join(" ");
    if body.trim().is_empty() {
        format!("{body}{joined}{tail}")
    } else {
        format!("{body} {joined}{tail}")
    }
}

/// Where a kernel command line was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineSite {
    /// `GRUB_CMDLINE_LINUX` in `/etc/default/grub`.
    GrubDefaultLinux,
    /// `GRUB_CMDLINE_LINUX_DEFAULT` (only used for normal, not recovery, entries).
    GrubDefaultLinuxDefault,
    /// A `linux`/`linuxefi`/`linux16`/`kernel` line of `grub.cfg` (or GRUB legacy `menu.lst`).
    GrubCfg,
    /// An `options` line of a Boot Loader Specification entry.
    Bls,
    /// A line of `/etc/kernel/cmdline` (used by `kernel-install` for new kernels).
    KernelCmdline,
    /// `kernelopts=` in GRUB's environment block (RHEL 8 BLS entries use `$kernelopts`).
    GrubEnv,
}

/// Size of GRUB's environment block file, padded with `#` (grub-editenv).
pub const GRUBENV_SIZE: usize = 1024;

/// Applies `edit` to the `kernelopts=` value of a GRUB environment block, keeping the file
/// exactly [`GRUBENV_SIZE`] bytes by adjusting the `#` padding. `None` if nothing changed or the
/// result does not fit.
pub fn edit_grubenv(
    text: &str,
    edit: &mut dyn FnMut(CmdlineSite, &str) -> Option<String>,
) -> Option<String> {
    // The padding is the run of '#' after the last newline.
    let body_len = text.rfind('\n').map_or(0, |i| i + 1);
    let (body, pad) = text.split_at(body_len);
    if !pad.bytes().all(|b| b == b'#') {
        return None;
    }
    let new_body = edit_lines(body, |line| {
        let args = line.strip_prefix("kernelopts=")?;
        Some(format!("kernelopts={}", edit(CmdlineSite::GrubEnv, args)?))
    })?;
    if text.len() != GRUBENV_SIZE {
        return Some(format!("{new_body}{pad}"));
    }
    let fill = GRUBENV_SIZE.checked_sub(new_body.len())?;
    Some(format!("{new_body}{}", "#".repeat(fill)))
}

/// Applies `edit` to the value of each `GRUB_CMDLINE_LINUX*` assignment in `/etc/default/grub`
/// text. With `ensure_linux`, a missing `GRUB_CMDLINE_LINUX` line is appended (its value being
/// `edit(GrubDefaultLinux, "")`). Returns the new text, or `None` if nothing changed.
pub fn edit_default_grub(
    text: &str,
    ensure_linux: bool,
    edit: &mut dyn FnMut(CmdlineSite, &str) -> Option<String>,
) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut saw_linux = false;
    for line in lines(text).take(MAX_LINES) {
        let (body, eol) = split_eol(line);
        let indent = body.len() - body.trim_start().len();
        let rest = &body[indent..];
        let rest_noexport = rest.strip_prefix("export ").unwrap_or(rest);
        let lead = body.len() - rest_noexport.len();
        let site = if rest_noexport.starts_with("GRUB_CMDLINE_LINUX=") {
            saw_linux = true;
            Some((CmdlineSite::GrubDefaultLinux, "GRUB_CMDLINE_LINUX=".len()))
        } else if rest_noexport.starts_with("GRUB_CMDLINE_LINUX_DEFAULT=") {
            Some((
                CmdlineSite::GrubDefaultLinuxDefault,
                "GRUB_CMDLINE_LINUX_DEFAULT=".len(),
            ))
        } else {
            None
        };
        let new = site.and_then(|(site, keylen)| {
            let vstart = lead + keylen;
            let v = &body[vstart..];
            let (q, inner, after) = match v.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let close = v[1..].find(q)? + 1;
                    (Some(q), &v[1..close], &v[close + 1..])
                }
                _ => {
                    let end = v.find(char::is_whitespace).unwrap_or(v.len());
                    (None, &v[..end], &v[end..])
                }
            };
            let ni = edit(site, inner)?;
            let q = q.unwrap_or('"');
            Some(format!("{}{q}{ni}{q}{after}{eol}", &body[..vstart]))
        });
        match new {
            Some(n) => {
                changed = true;
                out.push_str(&n);
            }
            None => out.push_str(line),
        }
    }
    if ensure_linux
        && !saw_linux
        && let Some(v) = edit(CmdlineSite::GrubDefaultLinux, "")
    {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("GRUB_CMDLINE_LINUX=\"{v}\"\n"));
        changed = true;
    }
    changed.then_some(out)
}

/// The kernel-loading commands of GRUB 2 and GRUB legacy.
const KERNEL_COMMANDS: &[&str] = &["linux", "linux16", "linuxefi", "kernel"];

/// Applies `edit` to the arguments after the kernel path of every kernel-loading line of a
/// `grub.cfg` (or `menu.lst`). Other lines, `search --fs-uuid` included, are untouched.
pub fn edit_grub_cfg(
    text: &str,
    edit: &mut dyn FnMut(CmdlineSite, &str) -> Option<String>,
) -> Option<String> {
    edit_lines(text, |body| {
        let spans = token_spans(body);
        let (a, b) = *spans.first()?;
        if !KERNEL_COMMANDS.contains(&body.get(a..b)?) {
            return None;
        }
        let (_, pe) = *spans.get(1)?;
        let args = body.get(pe..)?;
        let na = edit(CmdlineSite::GrubCfg, args)?;
        Some(format!("{}{na}", body.get(..pe)?))
    })
}

/// Applies `edit` to the `options` line(s) of a BLS entry.
pub fn edit_bls(
    text: &str,
    edit: &mut dyn FnMut(CmdlineSite, &str) -> Option<String>,
) -> Option<String> {
    edit_lines(text, |body| {
        let spans = token_spans(body);
        let (a, b) = *spans.first()?;
        if body.get(a..b)? != "options" {
            return None;
        }
        let args = body.get(b..)?;
        let na = edit(CmdlineSite::Bls, args)?;
        Some(format!("{}{na}", body.get(..b)?))
    })
}

/// Rewrites each line body with `f` (which returns `None` to keep the line), preserving line
/// terminators. `None` if nothing changed.
pub fn edit_lines(text: &str, mut f: impl FnMut(&str) -> Option<String>) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for line in lines(text).take(MAX_LINES) {
        let (body, eol) = split_eol(line);
        match f(body) {
            Some(n) if n != body => {
                changed = true;
                out.push_str(&n);
                out.push_str(eol);
            }
            _ => out.push_str(line),
        }
    }
    changed.then_some(out)
}

/// Removes lines for which `drop` is true. `None` if nothing was removed.
pub fn remove_lines(text: &str, mut drop: impl FnMut(&str) -> bool) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for line in lines(text).take(MAX_LINES) {
        if drop(split_eol(line).0) {
            changed = true;
        } else {
            out.push_str(line);
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_params_keeps_spacing() {
        let s = "  ro  root=/dev/sda1\tresume=/dev/sda2 quiet";
        let r = map_params(s, &["root", "resume"], |_, v| Some(v.replace("sda", "vda")));
        assert_eq!(
            r.as_deref(),
            Some("  ro  root=/dev/vda1\tresume=/dev/vda2 quiet")
        );
        assert_eq!(map_params(s, &["root"], |_, v| Some(v.to_owned())), None);
        assert_eq!(
            map_params("rootwait=1", &["root"], |_, _| Some("x".into())),
            None
        );
    }

    #[test]
    fn default_grub_quotes_and_append() {
        let t = "# c\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX='root=/dev/sda1'\nGRUB_TIMEOUT=5\n";
        let mut e = |site: CmdlineSite, v: &str| {
            (site == CmdlineSite::GrubDefaultLinux).then(|| append_params(v, &["x=1".into()]))
        };
        assert_eq!(
            edit_default_grub(t, true, &mut e).unwrap(),
            "# c\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX='root=/dev/sda1 x=1'\nGRUB_TIMEOUT=5\n"
        );
        assert_eq!(
            edit_default_grub("GRUB_TIMEOUT=5", true, &mut e).unwrap(),
            "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"x=1\"\n"
        );
        assert_eq!(
            edit_default_grub("GRUB_CMDLINE_LINUX=\n", false, &mut e).unwrap(),
            "GRUB_CMDLINE_LINUX=\"x=1\"\n"
        );
    }

    #[test]
    fn grub_cfg_only_kernel_lines() {
        let t = "\tsearch --no-floppy --fs-uuid --set=root abcd\n\tlinux\t/vmlinuz-6.1 root=/dev/sda1 ro\n\tinitrd /initrd.img\n";
        let r = edit_grub_cfg(t, &mut |_, a| {
            map_params(a, &["root"], |_, _| Some("UUID=u".into()))
        });
        assert_eq!(
            r.unwrap(),
            "\tsearch --no-floppy --fs-uuid --set=root abcd\n\tlinux\t/vmlinuz-6.1 root=UUID=u ro\n\tinitrd /initrd.img\n"
        );
    }

    #[test]
    fn grubenv_keeps_its_size() {
        let body = "# GRUB Environment Block\nsaved_entry=x\nkernelopts=root=/dev/sda2 ro\n";
        let env = format!("{body}{}", "#".repeat(GRUBENV_SIZE - body.len()));
        let mut e = |_: CmdlineSite, a: &str| Some(a.replace("/dev/sda2", "UUID=abc-def"));
        let n = edit_grubenv(&env, &mut e).unwrap();
        assert_eq!(n.len(), GRUBENV_SIZE);
        assert!(n.starts_with(
            "# GRUB Environment Block\nsaved_entry=x\nkernelopts=root=UUID=abc-def ro\n###"
        ));
        let mut grow = |_: CmdlineSite, a: &str| Some(format!("{a} {}", "x".repeat(2000)));
        assert_eq!(edit_grubenv(&env, &mut grow), None, "does not fit");
        assert_eq!(edit_grubenv("kernelopts=a\nx", &mut e), None, "not padding");
    }

    #[test]
    fn bls_options_and_removal() {
        let t = "title X\noptions root=/dev/sda2 ro\r\n";
        let r = edit_bls(t, &mut |_, a| {
            Some(append_params(a, &["console=ttyS0".into()]))
        });
        assert_eq!(
            r.unwrap(),
            "title X\noptions root=/dev/sda2 ro console=ttyS0\r\n"
        );
        assert_eq!(remove_lines("a\nb\nc", |l| l == "b").unwrap(), "a\nc");
        assert_eq!(remove_lines("a\n", |_| false), None);
        assert_eq!(
            replace_token("  a  b", 1, |t| Some(t.to_uppercase())).unwrap(),
            "  a  B"
        );
        assert_eq!(append_params("", &["a".into()]), "a");
        assert_eq!(
            replace_word("dev ens192 ens1920\tens192", "ens192", "ens3"),
            "dev ens3 ens1920\tens3"
        );
    }
}
