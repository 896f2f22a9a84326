//! The page headers of a Parquet column chunk, read for what they say each
//! page decodes to: the decoder sets aside what a header says before it
//! decodes the page, so the claims are added up and held against the limit
//! first. A header is a Thrift struct in the compact protocol; every field
//! but the two sizes is skipped.

/// What the pages of a column chunk (its bytes, headers and pages) say
/// they decode to; `None` when a header cannot be read or the pages do not
/// fill the chunk exactly.
pub(super) fn decoded_size(chunk: &[u8]) -> Option<u64> {
    let mut header = Header {
        bytes: chunk,
        at: 0,
    };
    let mut total = 0u64;
    while header.at < chunk.len() {
        let (decoded, stored) = header.page_sizes()?;
        header.skip(stored)?;
        total = total.saturating_add(decoded);
    }
    Some(total)
}

/// A reader of Thrift's compact protocol over a chunk's bytes.
struct Header<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// How deep structs and lists may nest in a header.
const MAX_DEPTH: usize = 32;

impl Header<'_> {
    /// A `PageHeader`'s `uncompressed_page_size` (field 2) and
    /// `compressed_page_size` (field 3), both i32; the header is read to
    /// its end.
    fn page_sizes(&mut self) -> Option<(u64, usize)> {
        let (mut decoded, mut stored) = (None, None);
        let mut id = 0i16;
        loop {
            let field = self.byte()?;
            if field == 0 {
                break;
            }
            let kind = field & 0x0f;
            id = match field >> 4 {
                0 => i16::try_from(self.zigzag()?).ok()?,
                delta => id.checked_add(i16::from(delta))?,
            };
            match (id, kind) {
                (2, 5) => decoded = Some(u64::try_from(self.zigzag()?).ok()?),
                (3, 5) => stored = Some(usize::try_from(self.zigzag()?).ok()?),
                _ => self.skip_value(kind, 0)?,
            }
        }
        Some((decoded?, stored?))
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.at = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())?;
        Some(())
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn zigzag(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn length(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    /// Skips a value of the compact type `kind` (a field's: a boolean is
    /// in the field's header).
    fn skip_value(&mut self, kind: u8, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match kind {
            1 | 2 => Some(()),
            3 => self.skip(1),
            4..=6 => self.varint().map(drop),
            7 => self.skip(8),
            8 => {
                let n = self.length()?;
                self.skip(n)
            }
            9 | 10 => {
                let header = self.byte()?;
                let n = match header >> 4 {
                    15 => self.length()?,
                    n => usize::from(n),
                };
                for _ in 0..n {
                    self.skip_element(header & 0x0f, depth + 1)?;
                }
                Some(())
            }
            11 => {
                let n = self.length()?;
                if n > 0 {
                    let kinds = self.byte()?;
                    for _ in 0..n {
                        self.skip_element(kinds >> 4, depth + 1)?;
                        self.skip_element(kinds & 0x0f, depth + 1)?;
                    }
                }
                Some(())
            }
            12 => loop {
                let field = self.byte()?;
                if field == 0 {
                    return Some(());
                }
                if field >> 4 == 0 {
                    self.zigzag()?;
                }
                self.skip_value(field & 0x0f, depth + 1)?;
            },
            13 => self.skip(16),
            _ => None,
        }
    }

    /// Skips an element of a list, set or map: a boolean takes a byte.
    fn skip_element(&mut self, kind: u8, depth: usize) -> Option<()> {
        match kind {
            1 | 2 => self.skip(1),
            _ => self.skip_value(kind, depth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_says_what_its_page_decodes_to() {
        // type 0, uncompressed 100, compressed 3, a data page header
        // {num_values 10, encoding 0, …, statistics {max b"ab"}, a list of
        // two booleans}, then the page's 3 bytes.
        let page = [
            0x15, 0x00, 0x15, 0xc8, 0x01, 0x15, 0x06, 0x2c, 0x15, 0x14, 0x15, 0x00, 0x1c, 0x18,
            0x02, b'a', b'b', 0x00, 0x19, 0x21, 0x01, 0x02, 0x00, 0x00, 1, 2, 3,
        ];
        assert_eq!(decoded_size(&page), Some(100));
        let two: Vec<u8> = page.iter().chain(&page).copied().collect();
        assert_eq!(decoded_size(&two), Some(200));
        assert_eq!(
            decoded_size(&page[..page.len() - 1]),
            None,
            "the page is cut"
        );
        assert_eq!(decoded_size(&page[..10]), None, "the header is cut");
        assert_eq!(decoded_size(&[]), Some(0));
    }
}
