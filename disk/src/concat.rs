//! A device made of ordered pieces of other devices: an LVM linear LV spanning several PVs and
//! segments, or any other "these ranges, one after another" layout.
//!
//! Reads are routed with a binary search over the pieces' start offsets, so a read costs
//! `O(log pieces)` plus one inner read per piece it touches. The number of pieces is capped
//! ([`MAX_PIECES`]) because piece lists come from image metadata (house style S12).

#![warn(clippy::arithmetic_side_effects, clippy::as_conversions)]

use crate::block::{BlockRead, Extent, SharedRead, check_range};
use crate::{Error, Result};

/// Most pieces one [`Concat`] may have. An LV has one piece per segment; LVM itself allows
/// thousands of segments only on pathologically fragmented VGs, so 65,536 is far above real use
/// while keeping the index small.
pub const MAX_PIECES: usize = 65_536;

/// One range of an inner device: `len` bytes of `dev` starting at `offset`.
#[derive(Clone)]
pub struct Piece {
    /// The device holding the bytes.
    pub dev: SharedRead,
    /// Where the range starts in `dev`.
    pub offset: u64,
    /// Length of the range in bytes (never zero once accepted by [`Concat::new`]).
    pub len: u64,
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Piece")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Pieces of other devices read as one device, in order.
#[derive(Debug, Clone)]
pub struct Concat {
    pieces: Vec<Piece>,
    /// `starts[i]` is where piece `i` begins in the concatenated address space; strictly increasing.
    starts: Vec<u64>,
    size: u64,
}

impl Concat {
    /// Builds the concatenation of `pieces`, in order.
    ///
    /// # Errors
    /// [`Error::Usage`] if there are more than [`MAX_PIECES`] pieces, a piece is empty, or the
    /// total size overflows `u64`; [`Error::OutOfBounds`] if a piece passes the end of its device.
    pub fn new(pieces: Vec<Piece>) -> Result<Self> {
        if pieces.len() > MAX_PIECES {
            return Err(Error::Usage(format!(
                "{} pieces exceed the limit of {MAX_PIECES}",
                pieces.len()
            )));
        }
        let mut starts = Vec::with_capacity(pieces.len());
        let mut size = 0u64;
        for (i, p) in pieces.iter().enumerate() {
            if p.len == 0 {
                return Err(Error::Usage(format!("piece {i} is empty")));
            }
            check_range(p.dev.size(), p.offset, p.len)?;
            starts.push(size);
            size = size
                .checked_add(p.len)
                .ok_or_else(|| Error::Usage(format!("total size overflows u64 at piece {i}")))?;
        }
        Ok(Self {
            pieces,
            starts,
            size,
        })
    }

    /// The pieces, in order.
    #[must_use]
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Index of the piece holding byte `offset` (which must be `< size`).
    fn locate(&self, offset: u64) -> usize {
        // starts[0] == 0 <= offset, so partition_point is >= 1 whenever there is a piece.
        self.starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }

    /// Calls `f(piece, offset_in_piece_device, len, offset_in_concat)` for each piece run
    /// covering `offset..offset+len`, in order. The range must already be checked.
    fn for_each_run(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(&Piece, u64, u64, u64) -> Result<()>,
    ) -> Result<()> {
        let mut pos = offset;
        // end <= size was checked by the caller, so no overflow.
        let end = offset.saturating_add(len);
        let mut i = self.locate(offset);
        while pos < end {
            let (Some(p), Some(&start)) = (self.pieces.get(i), self.starts.get(i)) else {
                // Unreachable for checked ranges: the pieces cover 0..size exactly.
                return Err(Error::OutOfBounds {
                    offset,
                    len,
                    size: self.size,
                });
            };
            // pos >= start because pieces are visited in order from locate(offset).
            let within = pos.saturating_sub(start);
            let n = p.len.saturating_sub(within).min(end.saturating_sub(pos));
            // offset + within < offset + len, which Concat::new checked against the device.
            f(p, p.offset.saturating_add(within), n, pos)?;
            pos = pos.saturating_add(n);
            i = i.saturating_add(1);
        }
        Ok(())
    }
}

impl BlockRead for Concat {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = u64::try_from(buf.len()).map_err(|_| Error::Usage("buffer too large".into()))?;
        check_range(self.size, offset, len)?;
        self.for_each_run(offset, len, |p, at, n, pos| {
            // pos - offset and n are both bounded by buf.len(), so they fit in usize.
            let from = usize::try_from(pos.saturating_sub(offset))
                .map_err(|_| Error::Usage("offset too large".into()))?;
            let n = usize::try_from(n).map_err(|_| Error::Usage("length too large".into()))?;
            let to = from.saturating_add(n);
            let dst = buf.get_mut(from..to).ok_or(Error::OutOfBounds {
                offset,
                len,
                size: self.size,
            })?;
            p.dev.read_exact_at(at, dst).map_err(|e| match e {
                Error::Io { source, .. } => Error::Io {
                    offset: pos,
                    source,
                },
                other => other,
            })
        })
    }

    fn logical_sector_size(&self) -> u32 {
        self.pieces
            .iter()
            .map(|p| p.dev.logical_sector_size())
            .max()
            .unwrap_or(512)
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, offset, len)?;
        let mut out: Vec<Extent> = Vec::new();
        self.for_each_run(offset, len, |p, at, n, pos| {
            for e in p.dev.extents(at, n)? {
                let mapped = Extent {
                    offset: pos.saturating_add(e.offset.saturating_sub(at)),
                    len: e.len,
                    kind: e.kind,
                };
                match out.last_mut() {
                    Some(last)
                        if last.kind == mapped.kind
                            && last.offset.checked_add(last.len) == Some(mapped.offset) =>
                    {
                        last.len = last.len.saturating_add(mapped.len);
                    }
                    _ => out.push(mapped),
                }
            }
            Ok(())
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::cast_possible_truncation
    )]
    use std::sync::Arc;

    use super::*;
    use crate::block::ExtentKind;
    use crate::mem::MemDisk;
    use crate::testkit::FaultyDisk;

    fn dev(fill: impl Fn(usize) -> u8, n: usize) -> SharedRead {
        Arc::new(MemDisk::from_vec((0..n).map(fill).collect()))
    }

    #[test]
    fn reads_across_pieces_in_order() {
        let a = dev(|i| i as u8, 100);
        let b = dev(|i| 200u8.wrapping_add(i as u8), 100);
        let c = Concat::new(vec![
            Piece {
                dev: a.clone(),
                offset: 90,
                len: 10,
            },
            Piece {
                dev: b,
                offset: 0,
                len: 5,
            },
            Piece {
                dev: a,
                offset: 0,
                len: 3,
            },
        ])
        .unwrap();
        assert_eq!(c.size(), 18);
        let mut buf = [0u8; 18];
        c.read_exact_at(0, &mut buf).unwrap();
        assert_eq!(
            buf,
            [
                90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 200, 201, 202, 203, 204, 0, 1, 2
            ]
        );
        let mut b3 = [0u8; 3];
        c.read_exact_at(9, &mut b3).unwrap();
        assert_eq!(b3, [99, 200, 201]);
        c.read_exact_at(15, &mut b3).unwrap();
        assert_eq!(b3, [0, 1, 2]);
        assert!(matches!(
            c.read_exact_at(16, &mut b3),
            Err(Error::OutOfBounds {
                offset: 16,
                len: 3,
                size: 18
            })
        ));
        let mut empty = [0u8; 0];
        c.read_exact_at(18, &mut empty).unwrap();
    }

    #[test]
    fn refuses_bad_pieces() {
        let a = dev(|_| 0, 10);
        let e = Concat::new(vec![Piece {
            dev: a.clone(),
            offset: 5,
            len: 6,
        }])
        .unwrap_err();
        assert!(matches!(
            e,
            Error::OutOfBounds {
                offset: 5,
                len: 6,
                size: 10
            }
        ));
        let e = Concat::new(vec![Piece {
            dev: a.clone(),
            offset: 0,
            len: 0,
        }])
        .unwrap_err();
        assert_eq!(e.to_string(), "piece 0 is empty");
        let many = vec![
            Piece {
                dev: a,
                offset: 0,
                len: 1
            };
            MAX_PIECES + 1
        ];
        let e = Concat::new(many).unwrap_err();
        assert_eq!(e.to_string(), "65537 pieces exceed the limit of 65536");
        let empty = Concat::new(Vec::new()).unwrap();
        assert_eq!(empty.size(), 0);
        assert!(empty.extents(0, 0).unwrap().is_empty());
    }

    #[test]
    fn io_errors_carry_the_concat_offset() {
        let bad: SharedRead = Arc::new(FaultyDisk::new(
            MemDisk::from_vec(vec![0; 64]),
            vec![36..37, 60..61],
        ));
        let good = dev(|_| 1, 64);
        let c = Concat::new(vec![
            Piece {
                dev: good,
                offset: 0,
                len: 16,
            },
            Piece {
                dev: bad,
                offset: 32,
                len: 16,
            },
        ])
        .unwrap();
        let mut buf = [0u8; 20];
        let e = c.read_exact_at(4, &mut buf).unwrap_err();
        assert!(matches!(e, Error::Io { offset: 16, .. }), "{e:?}");
    }

    #[test]
    fn extents_are_mapped_and_merged() {
        let a = dev(|_| 1, 64);
        let b = dev(|_| 2, 64);
        let c = Concat::new(vec![
            Piece {
                dev: a,
                offset: 10,
                len: 20,
            },
            Piece {
                dev: b,
                offset: 0,
                len: 30,
            },
        ])
        .unwrap();
        assert_eq!(
            c.extents(5, 40).unwrap(),
            vec![Extent {
                offset: 5,
                len: 40,
                kind: ExtentKind::Data
            }]
        );
    }
}
