//! A small, bounded unified-diff generator for the plan report.
//!
//! Common leading and trailing lines are trimmed first; the rest is compared with a longest
//! common subsequence table when it is small enough ([`MAX_LCS_CELLS`]), otherwise shown as one
//! replaced block. The output is what `diff -u` prints, modulo hunk boundaries in ties.

use std::fmt::Write as _;

/// Largest LCS table (cells) built for one file (house style S12).
pub const MAX_LCS_CELLS: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Del,
    Ins,
}

fn script(a: &[&str], b: &[&str]) -> Vec<(Op, usize, usize)> {
    // (op, index in a, index in b)
    let pre = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let mut out: Vec<(Op, usize, usize)> = (0..pre).map(|i| (Op::Same, i, i)).collect();
    let cells = (am.len() + 1).saturating_mul(bm.len() + 1);
    if cells <= MAX_LCS_CELLS && !am.is_empty() && !bm.is_empty() {
        let w = bm.len() + 1;
        let mut t = vec![0u32; cells];
        for i in (0..am.len()).rev() {
            for j in (0..bm.len()).rev() {
                t[i * w + j] = if am[i] == bm[j] {
                    t[(i + 1) * w + j + 1] + 1
                } else {
                    t[(i + 1) * w + j].max(t[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < am.len() || j < bm.len() {
            if i < am.len() && j < bm.len() && am[i] == bm[j] {
                out.push((Op::Same, pre + i, pre + j));
                i += 1;
                j += 1;
            } else if j < bm.len() && (i == am.len() || t[i * w + j + 1] >= t[(i + 1) * w + j]) {
                out.push((Op::Ins, pre + i, pre + j));
                j += 1;
            } else {
                out.push((Op::Del, pre + i, pre + j));
                i += 1;
            }
        }
        // Show deletions before insertions within a changed run, as diff -u does.
        let mut k = 0;
        while k < out.len() {
            let end = out[k..]
                .iter()
                .position(|o| o.0 == Op::Same)
                .map_or(out.len(), |p| k + p);
            out[k..end].sort_by_key(|o| match o.0 {
                Op::Del => (0, o.1),
                _ => (1, o.2),
            });
            k = end + 1;
        }
    } else {
        out.extend((0..am.len()).map(|i| (Op::Del, pre + i, pre)));
        out.extend((0..bm.len()).map(|j| (Op::Ins, pre + am.len(), pre + j)));
    }
    let (an, bn) = (a.len() - suf, b.len() - suf);
    out.extend((0..suf).map(|k| (Op::Same, an + k, bn + k)));
    out
}

fn push_line(out: &mut String, mark: char, line: &str) {
    out.push(mark);
    out.push_str(line);
    if !line.ends_with('\n') {
        out.push_str("\n\\ No newline at end of file\n");
    }
}

/// A unified diff of `old` → `new` for `path` with `context` lines of context, cut after
/// `max_lines` output lines. Empty when the texts are equal.
#[must_use]
pub fn unified(path: &str, old: &str, new: &str, context: usize, max_lines: usize) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let ops = script(&a, &b);
    let mut out = format!("--- a{path}\n+++ b{path}\n");
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != Op::Same).collect();
    let mut k = 0;
    let mut lines = 0usize;
    while k < changed.len() {
        let start = changed[k].saturating_sub(context);
        let mut end = changed[k];
        while k < changed.len() && changed[k] <= end.saturating_add(2 * context).saturating_add(1) {
            end = changed[k];
            k += 1;
        }
        let end = (end + context + 1).min(ops.len());
        let hunk = &ops[start..end];
        let a_start = ops[..start].iter().filter(|o| o.0 != Op::Ins).count();
        let b_start = ops[..start].iter().filter(|o| o.0 != Op::Del).count();
        let a_len = hunk.iter().filter(|o| o.0 != Op::Ins).count();
        let b_len = hunk.iter().filter(|o| o.0 != Op::Del).count();
        let from = |s: usize, l: usize| if l == 0 { s } else { s + 1 };
        let _ = writeln!(
            out,
            "@@ -{},{a_len} +{},{b_len} @@",
            from(a_start, a_len),
            from(b_start, b_len)
        );
        for o in hunk {
            match o.0 {
                Op::Same => push_line(&mut out, ' ', a[o.1]),
                Op::Del => push_line(&mut out, '-', a[o.1]),
                Op::Ins => push_line(&mut out, '+', b[o.2]),
            }
            lines += 1;
            if lines >= max_lines {
                let _ = writeln!(out, "... diff cut after {max_lines} lines");
                return out;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_changed_line_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\n";
        assert_eq!(
            unified("/x", old, new, 3, 100),
            "--- a/x\n+++ b/x\n@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n"
        );
    }

    #[test]
    fn separate_hunks_and_insertions() {
        let old: String = (0..20).map(|i| format!("{i}\n")).collect();
        let new: String = (0..20)
            .map(|i| match i {
                2 => "two\n".to_owned(),
                17 => "17\nnew\n".to_owned(),
                _ => format!("{i}\n"),
            })
            .collect();
        let d = unified("/f", &old, &new, 1, 100);
        assert_eq!(
            d,
            "--- a/f\n+++ b/f\n@@ -2,3 +2,3 @@\n 1\n-2\n+two\n 3\n@@ -18,2 +18,3 @@\n 17\n+new\n 18\n"
        );
    }

    #[test]
    fn creation_deletion_and_missing_newline() {
        assert_eq!(
            unified("/n", "", "x\n", 3, 10),
            "--- a/n\n+++ b/n\n@@ -0,0 +1,1 @@\n+x\n"
        );
        assert_eq!(
            unified("/n", "x\n", "", 3, 10),
            "--- a/n\n+++ b/n\n@@ -1,1 +0,0 @@\n-x\n"
        );
        assert_eq!(
            unified("/n", "x", "y", 3, 10),
            "--- a/n\n+++ b/n\n@@ -1,1 +1,1 @@\n-x\n\\ No newline at end of file\n+y\n\\ No newline at end of file\n"
        );
        assert_eq!(unified("/n", "same", "same", 3, 10), "");
    }

    #[test]
    fn output_is_bounded() {
        let old: String = (0..100).map(|i| format!("{i}\n")).collect();
        let new: String = (0..100).map(|i| format!("x{i}\n")).collect();
        let d = unified("/f", &old, &new, 3, 10);
        assert_eq!(d.lines().count(), 2 + 1 + 10 + 1);
        assert!(d.ends_with("... diff cut after 10 lines\n"));
    }
}
