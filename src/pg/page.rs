//! Data-page checksums, verified while a backup streams a relation file: the same test
//! pg_basebackup and pgBackRest make. The algorithm is PostgreSQL's (FNV-1a over 32 parallel
//! lanes with a high-bit mix, xor of the block number, mod 65535 plus one); constants and
//! offsets come from checksum_impl.h and bufpage.h.
//!
//! Pages written after the backup started (LSN at or past the start LSN) are skipped: WAL
//! replay rewrites them. New (all-zero) pages have no checksum yet.

use std::io::{self, Read};

pub const PAGE_SIZE: usize = 8192;
/// Blocks per relation segment file (1 GB of 8 kB pages).
pub const RELSEG_BLOCKS: u32 = 131_072;

const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16_777_619;
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];
const CHECKSUM_OFFSET: usize = 8;
const UPPER_OFFSET: usize = 14;

fn mix(sum: u32, value: u32) -> u32 {
    let t = sum ^ value;
    t.wrapping_mul(FNV_PRIME) ^ (t >> 17)
}

/// PostgreSQL's checksum of `page` as block `blkno` (the stored checksum field counts as 0).
///
/// Written row by row over fixed-size arrays so that the compiler turns the 32 lanes into
/// vector instructions, as PostgreSQL's C does: a backup verifies every page it copies, on
/// the thread that also compresses the file.
pub fn page_checksum(page: &[u8], blkno: u32) -> u16 {
    let mut sums = BASE_OFFSETS;
    for (index, row) in page[..PAGE_SIZE].chunks_exact(4 * N_SUMS).enumerate() {
        let mut words = [0u32; N_SUMS];
        for (word, bytes) in words.iter_mut().zip(row.chunks_exact(4)) {
            *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        if index == 0 {
            // pd_checksum is the low half of this little-endian word: zero it.
            words[CHECKSUM_OFFSET / 4] &= 0xFFFF_0000;
        }
        for (sum, word) in sums.iter_mut().zip(words) {
            *sum = mix(*sum, word);
        }
    }
    finish(sums, blkno)
}

/// The end of PostgreSQL's checksum: two rounds of zeros through every lane, the lanes xored
/// together and with the block number, then mod 65535 plus one (0 means "no checksum").
fn finish(mut sums: [u32; N_SUMS], blkno: u32) -> u16 {
    for _ in 0..2 {
        for sum in sums.iter_mut() {
            *sum = mix(*sum, 0);
        }
    }
    let folded = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ blkno;
    ((folded % 65535) + 1) as u16
}

/// Whether `page` as block `blkno` fails verification for a backup that started at `start_lsn`.
pub fn page_is_bad(page: &[u8], blkno: u32, start_lsn: u64) -> bool {
    let upper = u16::from_le_bytes([page[UPPER_OFFSET], page[UPPER_OFFSET + 1]]);
    if upper == 0 {
        // A new page: all zeros is valid, anything else in a new page is not.
        return page.iter().any(|&b| b != 0);
    }
    let lsn_hi = u32::from_le_bytes([page[0], page[1], page[2], page[3]]);
    let lsn_lo = u32::from_le_bytes([page[4], page[5], page[6], page[7]]);
    let lsn = (u64::from(lsn_hi) << 32) | u64::from(lsn_lo);
    if lsn >= start_lsn {
        return false;
    }
    let stored = u16::from_le_bytes([page[CHECKSUM_OFFSET], page[CHECKSUM_OFFSET + 1]]);
    stored != page_checksum(page, blkno)
}

/// Whether a file name is a relation data file (`16384`, `16384_fsm`, `16384.2`, ...).
/// Returns the first block number of the file when it is.
pub fn relation_first_block(name: &str) -> Option<u32> {
    let (base, segno) = match name.split_once('.') {
        Some((b, s)) => (b, s.parse::<u32>().ok()?),
        None => (name, 0),
    };
    let oid = match base.split_once('_') {
        Some((o, "fsm" | "vm" | "init")) => o,
        Some(_) => return None,
        None => base,
    };
    if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segno.checked_mul(RELSEG_BLOCKS)
}

/// Passes a relation file through unchanged, noting the blocks whose checksum fails.
pub struct PageChecker<R> {
    inner: R,
    pending: Vec<u8>,
    next_block: u32,
    start_lsn: u64,
    pub bad_blocks: Vec<u32>,
}

impl<R: Read> PageChecker<R> {
    pub fn new(inner: R, first_block: u32, start_lsn: u64) -> PageChecker<R> {
        PageChecker {
            inner,
            pending: Vec::with_capacity(PAGE_SIZE),
            next_block: first_block,
            start_lsn,
            bad_blocks: Vec::new(),
        }
    }

    fn check(&mut self, page: &[u8]) {
        if page_is_bad(page, self.next_block, self.start_lsn) {
            self.bad_blocks.push(self.next_block);
        }
        self.next_block += 1;
    }
}

impl<R: Read> Read for PageChecker<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        let mut data = &out[..n];
        if !self.pending.is_empty() {
            let take = (PAGE_SIZE - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == PAGE_SIZE {
                let page = std::mem::take(&mut self.pending);
                self.check(&page);
                self.pending = page;
                self.pending.clear();
            }
        }
        while data.len() >= PAGE_SIZE {
            let (page, rest) = data.split_at(PAGE_SIZE);
            self.check(page);
            data = rest;
        }
        // A partial last page (a file being extended) is not checked.
        self.pending.extend_from_slice(data);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page as PostgreSQL would write it: header with LSN and pd_upper, then its checksum.
    pub fn valid_page(blkno: u32, lsn: u64, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; PAGE_SIZE];
        p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
        p[UPPER_OFFSET..UPPER_OFFSET + 2].copy_from_slice(&4096u16.to_le_bytes());
        let c = page_checksum(&p, blkno);
        p[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2].copy_from_slice(&c.to_le_bytes());
        p
    }

    /// PostgreSQL's lane loop word by word, as checksum_impl.h writes it: the reference the
    /// vectorised [`page_checksum`] must agree with (the shared [`finish`] is unchanged).
    fn reference_checksum(page: &[u8], blkno: u32) -> u16 {
        let mut sums = BASE_OFFSETS;
        for i in 0..PAGE_SIZE / 4 {
            let b = &page[i * 4..i * 4 + 4];
            let mut w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if i * 4 == CHECKSUM_OFFSET {
                w &= 0xFFFF_0000;
            }
            sums[i % N_SUMS] = mix(sums[i % N_SUMS], w);
        }
        finish(sums, blkno)
    }

    #[test]
    fn vectorised_checksum_agrees_with_the_word_by_word_algorithm() {
        // A simple LCG gives varied pages without a dependency.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut page = vec![0u8; PAGE_SIZE];
        for blkno in [0, 1, 7, RELSEG_BLOCKS - 1, RELSEG_BLOCKS, u32::MAX] {
            for byte in page.iter_mut() {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                *byte = (state >> 56) as u8;
            }
            assert_eq!(
                page_checksum(&page, blkno),
                reference_checksum(&page, blkno),
                "block {blkno}"
            );
        }
    }

    #[test]
    fn checksum_ignores_its_own_field_and_depends_on_block_and_content() {
        let p = valid_page(7, 0x100, 0xAB);
        assert!(!page_is_bad(&p, 7, 0x1000));
        assert!(
            page_is_bad(&p, 8, 0x1000),
            "block number is part of the checksum"
        );
        let mut flipped = p.clone();
        flipped[5000] ^= 1;
        assert!(page_is_bad(&flipped, 7, 0x1000));
        assert!(
            !page_is_bad(&flipped, 7, 0x100),
            "pages written after backup start are skipped"
        );
        assert!(!page_is_bad(&vec![0u8; PAGE_SIZE], 3, 0x1000), "new page");
    }

    #[test]
    fn checker_finds_bad_blocks_across_uneven_reads() {
        let mut file = Vec::new();
        for b in 0..5 {
            file.extend(valid_page(RELSEG_BLOCKS + b, 0x10, b as u8));
        }
        file[2 * PAGE_SIZE + 300] ^= 0xFF;
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(out.len()).min(3000);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut c = PageChecker::new(
            Dribble(&file),
            relation_first_block("16384.1").unwrap(),
            0x1000,
        );
        let mut out = Vec::new();
        c.read_to_end(&mut out).unwrap();
        assert_eq!(out, file);
        assert_eq!(c.bad_blocks, vec![RELSEG_BLOCKS + 2]);
    }

    #[test]
    fn relation_file_names() {
        assert_eq!(relation_first_block("16384"), Some(0));
        assert_eq!(relation_first_block("16384_fsm"), Some(0));
        assert_eq!(relation_first_block("16384_vm.3"), Some(3 * RELSEG_BLOCKS));
        for not in [
            "PG_VERSION",
            "pg_filenode.map",
            "16384_foo",
            "t3_16384",
            "pg_internal.init",
            "",
        ] {
            assert_eq!(relation_first_block(not), None, "{not}");
        }
    }
}
