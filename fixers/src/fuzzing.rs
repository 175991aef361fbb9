//! Fuzz harness bodies (house style S17): plain functions that must never panic.

/// Parses `data` as a recipe (lossy UTF-8) and lints it.
pub fn fuzz_recipe(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let issues = crate::lint_text(&text);
    for i in &issues {
        let _ = i.to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed-seed xorshift, so the mutations are the same on every run.
    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn fuzz_recipe_survives_mutations_of_shipped_recipes() {
        let seeds: Vec<&str> = crate::recipe::shipped_texts().collect();
        assert!(!seeds.is_empty());
        for s in &seeds {
            fuzz_recipe(s.as_bytes());
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..1000u64 {
            let seed = seeds[usize::try_from(i).unwrap() % seeds.len()];
            let mut d = seed.as_bytes().to_vec();
            let r = xorshift(&mut state);
            match r % 4 {
                0 => d.truncate(usize::try_from(r >> 8).unwrap() % (d.len() + 1)),
                1 => {
                    for _ in 0..1 + r % 8 {
                        let at = usize::try_from(xorshift(&mut state)).unwrap() % d.len();
                        d[at] ^= u8::try_from(xorshift(&mut state) & 0xff).unwrap();
                    }
                }
                2 => {
                    let at = usize::try_from(r >> 8).unwrap() % d.len();
                    let tokens: [&[u8]; 6] = [
                        b"\"",
                        b"[[step]]\n",
                        b"=",
                        b"\n[match]\n",
                        b"'''",
                        b"version = \">=\"\n",
                    ];
                    let tok = tokens[usize::try_from(r >> 40).unwrap() % tokens.len()];
                    d.splice(at..at, tok.iter().copied());
                }
                _ => {
                    let at = usize::try_from(r >> 8).unwrap() % d.len();
                    let len = usize::try_from(r >> 48).unwrap() % 64;
                    let end = (at + len).min(d.len());
                    d.drain(at..end);
                }
            }
            fuzz_recipe(&d);
        }
    }
}
