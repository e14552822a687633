//! The bytes on disk: blocks of events, the write-ahead records of a stream's open segment,
//! sealed (compressed) segment files and the small metadata files.
//!
//! A block holds consecutive events of one stream (contiguous `seq`s): a column section
//! (zigzag-varint deltas of timestamps and ingestion times, varint message lengths) followed by
//! the messages back to back, so a substring search runs over the messages alone.
//!
//! Open segment (`<first seq, 16 hex>.wal`): records `[header 44][crc32 4][body]`, one per
//! block of an append; the CRC covers the header and the body, so a torn tail is detected and
//! cut on open. A full block (~128 KiB, what a large append is cut into) is written as it will
//! be sealed, its body `[raw length 4][LZ4 block][trigram filter]` (sealing then copies it, and
//! the open segment holds and syncs the compressed bytes: for logs a fraction of the raw ones),
//! unless LZ4 cannot shorten it; a smaller block is written raw (its body is the block), and
//! sealing joins such blocks. Older builds read only raw records: the open segments of this
//! format are not for a downgrade (an older build would cut them at the first compressed record).
//!
//! Sealed segment (`<first seq, 16 hex>.seg`, written whole then renamed): magic, the
//! LZ4-compressed blocks (~128 KiB of events each), each followed by its trigram filter (a
//! 32,768-bit set of the hashed 3-byte windows of its messages, and the set's CRC: a search for
//! a substring skips, without decompressing it, a block missing one of the substring's
//! trigrams), then an index of the blocks (seq range, timestamp range, offsets, CRC of each
//! compressed block), its CRC, and a fixed footer.

use crate::{Error, Result};

pub(crate) const WAL_MAGIC: u32 = 0x4c57_5345;
/// A write-ahead record whose body is a compressed block and its filter.
const WAL_MAGIC_LZ4: u32 = 0x4c57_5346;
pub(crate) const WAL_HEADER: usize = 48;
pub(crate) const SEG_MAGIC: &[u8; 8] = b"ESTLSEG1";
/// A sealed block's trigram filter: the bit set, then its CRC.
pub(crate) const FILTER_BYTES: usize = 4096;
pub(crate) const FILTER_LEN: usize = FILTER_BYTES + 4;
/// The most raw bytes a compressed block may claim.
const MAX_RAW_BLOCK: u32 = 16 << 20;
const SEG_FOOTER: usize = 24;
const INDEX_ENTRY: usize = 56;

/// Where a block is and what it holds. For a raw write-ahead record `offset`/`len` are those of
/// the uncompressed block (after the record header); for a sealed block, and a write-ahead
/// record written compressed, of the compressed bytes (`crc` theirs, the filter after them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockMeta {
    pub first_seq: u64,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub max_ingest: i64,
    pub offset: u64,
    pub len: u32,
    pub raw_len: u32,
    pub crc: u32,
}

impl BlockMeta {
    pub fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }

    /// For a block of an open segment, as written or parsed: whether it was written
    /// compressed, with its filter after it, as in a sealed segment (raw records are exactly as
    /// long as their blocks, and a block is written compressed only when LZ4 shortens it).
    pub fn compressed_in_wal(&self) -> bool {
        self.len < self.raw_len
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let Some(&b) = buf.get(*pos) else { return Err(Error::Corrupt("truncated block columns".into())) };
        *pos += 1;
        if shift >= 64 {
            return Err(Error::Corrupt("bad varint in block".into()));
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
        shift += 7;
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Builds one block from events given as (timestamp, ingestion time, message): either with
/// the messages ([`push`](Self::push), then [`finish`](Self::finish)), or with their columns
/// only ([`column`](Self::column)), the messages going straight into the write-ahead record
/// ([`finish_record`](Self::finish_record)) or, for a full block, into the raw block it is
/// compressed from ([`finish_raw`](Self::finish_raw)): one copy of each message on the append
/// path.
#[derive(Default)]
pub(crate) struct BlockBuilder {
    cols: Vec<u8>,
    msgs: Vec<u8>,
    /// Bytes of the block's messages (held in `msgs`, or by the caller).
    msgs_len: usize,
    count: u32,
    prev_ts: i64,
    prev_ingest: i64,
    min_ts: i64,
    max_ts: i64,
    max_ingest: i64,
}

impl BlockBuilder {
    pub fn push(&mut self, ts: i64, ingest: i64, msg: &[u8]) {
        self.column(ts, ingest, msg.len());
        self.msgs.extend_from_slice(msg);
    }

    /// Adds an event's columns; its message (`len` bytes) is the caller's to hand to
    /// [`finish_record`](Self::finish_record) or [`finish_raw`](Self::finish_raw).
    pub fn column(&mut self, ts: i64, ingest: i64, len: usize) {
        if self.count == 0 {
            self.min_ts = ts;
            self.max_ts = ts;
            self.max_ingest = ingest;
        } else {
            self.min_ts = self.min_ts.min(ts);
            self.max_ts = self.max_ts.max(ts);
            self.max_ingest = self.max_ingest.max(ingest);
        }
        put_varint(&mut self.cols, zigzag(ts.wrapping_sub(self.prev_ts)));
        put_varint(&mut self.cols, zigzag(ingest.wrapping_sub(self.prev_ingest)));
        put_varint(&mut self.cols, len as u64);
        self.prev_ts = ts;
        self.prev_ingest = ingest;
        self.msgs_len += len;
        self.count += 1;
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn raw_len(&self) -> usize {
        4 + self.cols.len() + self.msgs_len
    }

    /// Appends the block's bytes to `out` and returns its metadata (offset, len and crc unset)
    /// and resets the builder.
    pub fn finish(&mut self, first_seq: u64, out: &mut Vec<u8>) -> BlockMeta {
        debug_assert_eq!(self.msgs.len(), self.msgs_len, "a block's messages are all pushed or all the caller's");
        let start = out.len();
        out.extend_from_slice(&(self.cols.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.cols);
        out.extend_from_slice(&self.msgs);
        self.msgs.clear();
        self.meta(first_seq, out.len() - start)
    }

    /// Appends a write-ahead record of the block whose columns were added with
    /// [`column`](Self::column) and whose messages `msgs` yields, in order, to `out` (which
    /// starts at `file_offset` in the open segment); returns the block's metadata as stored
    /// (`offset` and `len` those of the block in the file) and resets the builder.
    pub fn finish_record<'m>(
        &mut self,
        first_seq: u64,
        msgs: impl Iterator<Item = &'m [u8]>,
        out: &mut Vec<u8>,
        file_offset: u64,
    ) -> BlockMeta {
        let start = out.len();
        out.resize(start + WAL_HEADER, 0); // the header, once the block is in place
        let meta = self.finish_raw(first_seq, msgs, out);
        close_raw_record(out, start, meta, file_offset)
    }

    /// Appends the raw block whose columns were added with [`column`](Self::column) and whose
    /// messages `msgs` yields, in order, to `out`; returns its metadata (offset, len and crc
    /// unset) and resets the builder.
    pub fn finish_raw<'m>(
        &mut self,
        first_seq: u64,
        msgs: impl Iterator<Item = &'m [u8]>,
        out: &mut Vec<u8>,
    ) -> BlockMeta {
        debug_assert!(self.msgs.is_empty(), "finish_raw takes the messages from the caller");
        let start = out.len();
        let block_len = 4 + self.cols.len() + self.msgs_len;
        out.extend_from_slice(&(self.cols.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.cols);
        let meta = self.meta(first_seq, block_len);
        for m in msgs {
            out.extend_from_slice(m);
        }
        assert_eq!(out.len() - start, block_len, "messages as long as their columns say");
        meta
    }

    /// The block's metadata (offset, len and crc unset); resets the columns.
    fn meta(&mut self, first_seq: u64, raw_len: usize) -> BlockMeta {
        let meta = BlockMeta {
            first_seq,
            count: self.count,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            max_ingest: self.max_ingest,
            offset: 0,
            len: 0,
            raw_len: raw_len as u32,
            crc: 0,
        };
        self.cols.clear();
        self.msgs_len = 0;
        self.count = 0;
        self.prev_ts = 0;
        self.prev_ingest = 0;
        meta
    }
}

/// The messages region of a raw block (what substring searches run over).
pub(crate) fn block_messages(raw: &[u8]) -> Result<&[u8]> {
    let cols = u32::from_le_bytes(raw.get(..4).ok_or_else(short)?.try_into().unwrap()) as usize;
    raw.get(4 + cols..).ok_or_else(short)
}

fn short() -> Error {
    Error::Corrupt("truncated block".into())
}

/// A decoded block: the columns, and the messages as one string sliced per event.
pub(crate) struct Decoded<'a> {
    pub ts: Vec<i64>,
    pub ingest: Vec<i64>,
    /// End offset of each message in `msgs`.
    pub ends: Vec<u32>,
    pub msgs: &'a str,
}

impl Decoded<'_> {
    pub fn message(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.msgs[start..self.ends[i] as usize]
    }
}

pub(crate) fn decode_block(raw: &[u8], count: usize) -> Result<Decoded<'_>> {
    let cols_len = u32::from_le_bytes(raw.get(..4).ok_or_else(short)?.try_into().unwrap()) as usize;
    let cols = raw.get(4..4 + cols_len).ok_or_else(short)?;
    let msgs = &raw[4 + cols_len..];
    let msgs = std::str::from_utf8(msgs).map_err(|_| Error::Corrupt("block messages are not UTF-8".into()))?;
    let mut d = Decoded {
        ts: Vec::with_capacity(count),
        ingest: Vec::with_capacity(count),
        ends: Vec::with_capacity(count),
        msgs,
    };
    let (mut pos, mut ts, mut ingest, mut end) = (0usize, 0i64, 0i64, 0u64);
    for _ in 0..count {
        ts = ts.wrapping_add(unzigzag(get_varint(cols, &mut pos)?));
        ingest = ingest.wrapping_add(unzigzag(get_varint(cols, &mut pos)?));
        end += get_varint(cols, &mut pos)?;
        if end as usize > msgs.len() || !msgs.is_char_boundary(end as usize) {
            return Err(Error::Corrupt("message length out of block".into()));
        }
        d.ts.push(ts);
        d.ingest.push(ingest);
        d.ends.push(end as u32);
    }
    Ok(d)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn le_i64(b: &[u8], at: usize) -> i64 {
    le_u64(b, at) as i64
}

/// A write-ahead record's header up to its CRC.
fn wal_header(magic: u32, meta: &BlockMeta, body_len: usize) -> [u8; WAL_HEADER - 4] {
    let mut h = [0u8; WAL_HEADER - 4];
    h[0..4].copy_from_slice(&magic.to_le_bytes());
    h[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
    h[8..16].copy_from_slice(&meta.first_seq.to_le_bytes());
    h[16..20].copy_from_slice(&meta.count.to_le_bytes());
    h[20..28].copy_from_slice(&meta.min_ts.to_le_bytes());
    h[28..36].copy_from_slice(&meta.max_ts.to_le_bytes());
    h[36..44].copy_from_slice(&meta.max_ingest.to_le_bytes());
    h
}

/// The CRC of a write-ahead record (header, CRC field, body): over the header and the body.
fn record_crc(record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&record[..WAL_HEADER - 4]);
    h.update(&record[WAL_HEADER..]);
    h.finalize()
}

/// Fills in the header and the CRC of a write-ahead record whose body follows the header's
/// place in `record`; returns the CRC.
fn close_record(record: &mut [u8], magic: u32, meta: &BlockMeta) -> u32 {
    let body_len = record.len() - WAL_HEADER;
    record[..WAL_HEADER - 4].copy_from_slice(&wal_header(magic, meta, body_len));
    let crc = record_crc(record);
    record[WAL_HEADER - 4..WAL_HEADER].copy_from_slice(&crc.to_le_bytes());
    crc
}

/// Closes the raw write-ahead record at `start` in `out` (its header's place, then the block of
/// `meta`; `out` starts at `file_offset` in the open segment); returns the block's metadata as
/// stored.
fn close_raw_record(out: &mut [u8], start: usize, meta: BlockMeta, file_offset: u64) -> BlockMeta {
    let crc = close_record(&mut out[start..], WAL_MAGIC, &meta);
    BlockMeta { offset: file_offset + (start + WAL_HEADER) as u64, len: meta.raw_len, crc, ..meta }
}

/// Appends a write-ahead record of the raw block `raw` (metadata `meta`) to `out`, which starts
/// at `file_offset` in the open segment: compressed, with its filter, when LZ4 shortens the
/// block, raw otherwise. Returns the block's metadata as stored (for a compressed one, as in a sealed
/// segment: where the LZ4 bytes are, their length and CRC).
pub(crate) fn wal_record(
    meta: BlockMeta,
    raw: &[u8],
    out: &mut Vec<u8>,
    file_offset: u64,
    lz4: &mut Vec<u8>,
) -> Result<BlockMeta> {
    let start = out.len();
    out.resize(start + WAL_HEADER + 4, 0); // the header and the raw length, once the body is in
    let sealed = compress_block(meta, raw, out, lz4)?;
    if sealed.len as usize >= raw.len() {
        // Incompressible: the block as it is (no filter: raw blocks are read whole).
        out.truncate(start + WAL_HEADER);
        out.extend_from_slice(raw);
        return Ok(close_raw_record(out, start, meta, file_offset));
    }
    push_filter(raw, out)?;
    out[start + WAL_HEADER..start + WAL_HEADER + 4].copy_from_slice(&(raw.len() as u32).to_le_bytes());
    close_record(&mut out[start..], WAL_MAGIC_LZ4, &meta);
    Ok(BlockMeta { offset: file_offset + sealed.offset, ..sealed })
}

/// Whether the write-ahead record of `meta` (parsed or written earlier) is still as written in
/// `wal` (the open segment's bytes read back): its header and block against its CRC.
pub(crate) fn wal_record_intact(wal: &[u8], meta: &BlockMeta) -> bool {
    debug_assert!(!meta.compressed_in_wal(), "a raw record's block (a compressed one's CRC is its LZ4 bytes')");
    let at = meta.offset as usize;
    let Some(record) = at.checked_sub(WAL_HEADER).and_then(|from| wal.get(from..at + meta.len as usize)) else {
        return false;
    };
    record_crc(record) == meta.crc && le_u32(record, 44) == meta.crc
}

/// Parses an open segment's records; returns them and the length of the valid prefix (a torn
/// or corrupt tail starts there).
pub(crate) fn parse_wal(buf: &[u8]) -> (Vec<BlockMeta>, usize) {
    let mut blocks = Vec::new();
    let mut pos = 0usize;
    while pos + WAL_HEADER <= buf.len() {
        let h = &buf[pos..pos + WAL_HEADER];
        let magic = le_u32(h, 0);
        if magic != WAL_MAGIC && magic != WAL_MAGIC_LZ4 {
            break;
        }
        let len = le_u32(h, 4) as usize;
        let Some(body) = buf.get(pos + WAL_HEADER..pos + WAL_HEADER + len) else { break };
        let crc = record_crc(&buf[pos..pos + WAL_HEADER + len]);
        if crc != le_u32(h, 44) {
            break;
        }
        let mut meta = BlockMeta {
            first_seq: le_u64(h, 8),
            count: le_u32(h, 16),
            min_ts: le_i64(h, 20),
            max_ts: le_i64(h, 28),
            max_ingest: le_i64(h, 36),
            offset: (pos + WAL_HEADER) as u64,
            len: len as u32,
            raw_len: len as u32,
            crc,
        };
        if magic == WAL_MAGIC_LZ4 {
            // [raw length][LZ4 block][filter]: the block as a sealed segment describes it.
            let Some(n) = len.checked_sub(4 + FILTER_LEN).filter(|&n| n > 0) else { break };
            let raw_len = le_u32(body, 0);
            if n as u64 >= u64::from(raw_len) || raw_len > MAX_RAW_BLOCK {
                break;
            }
            meta.offset += 4;
            meta.len = n as u32;
            meta.raw_len = raw_len;
            meta.crc = crc32fast::hash(&body[4..4 + n]);
        }
        blocks.push(meta);
        pos += WAL_HEADER + len;
    }
    (blocks, pos)
}

/// Compresses a raw block into `out` (a sealed segment being built), adds its trigram filter
/// and fills in where it is. `lz4` is the compressor's output buffer, kept from one block to
/// the next.
pub(crate) fn seal_block(meta: BlockMeta, raw: &[u8], out: &mut Vec<u8>, lz4: &mut Vec<u8>) -> Result<BlockMeta> {
    let meta = compress_block(meta, raw, out, lz4)?;
    push_filter(raw, out)?;
    Ok(meta)
}

/// [`seal_block`] without the filter.
fn compress_block(mut meta: BlockMeta, raw: &[u8], out: &mut Vec<u8>, lz4: &mut Vec<u8>) -> Result<BlockMeta> {
    // `compress_into` writes into an initialised slice: a buffer zeroed once and reused, then
    // the compressed bytes copied, costs less than zeroing the worst case in `out` per block.
    let max = lz4_flex::block::get_maximum_output_size(raw.len());
    if lz4.len() < max {
        lz4.resize(max, 0);
    }
    let n =
        lz4_flex::block::compress_into(raw, lz4).map_err(|e| Error::Corrupt(format!("compressing a block: {e}")))?;
    let start = out.len();
    out.extend_from_slice(&lz4[..n]);
    meta.offset = start as u64;
    meta.len = n as u32;
    meta.raw_len = raw.len() as u32;
    meta.crc = crc32fast::hash(&out[start..]);
    Ok(meta)
}

/// Appends the trigram filter of a raw block's messages, and its CRC, to `out`.
fn push_filter(raw: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let at = out.len();
    out.resize(at + FILTER_BYTES, 0);
    let filter = &mut out[at..];
    let mut set = |gram: u32| {
        let bit = gram_hash(gram);
        filter[(bit >> 3) as usize % FILTER_BYTES] |= 1 << (bit & 7);
    };
    // Six windows per 8-byte load (the windows at i..i+6 lie in bytes i..i+8), and when those
    // eight bytes are the ones of the step before, no store: their windows set the same bits.
    // A run of one byte (padding, rules, repeated characters) then costs a comparison per six
    // bytes instead of a read-modify-write of one filter byte after the other, which chain
    // through memory.
    let msgs = block_messages(raw)?;
    let (mut i, mut prev) = (0, None);
    while i + 8 <= msgs.len() {
        let w = u64::from_le_bytes(msgs[i..i + 8].try_into().expect("8 bytes"));
        if prev != Some(w) {
            for k in 0..6 {
                set((w >> (8 * k)) as u32 & 0xff_ffff);
            }
            prev = Some(w);
        }
        i += 6;
    }
    for w in msgs[i..].windows(3) {
        set(gram_of(w));
    }
    let crc = crc32fast::hash(filter);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Where a 3-byte window lands in a block's filter.
fn gram_bit(w: &[u8]) -> u32 {
    gram_hash(gram_of(w))
}

fn gram_of(w: &[u8]) -> u32 {
    u32::from_le_bytes([w[0], w[1], w[2], 0])
}

fn gram_hash(gram: u32) -> u32 {
    gram.wrapping_mul(0x9e37_79b1) >> 17
}

/// The filter bits a block must have to hold all of `needles` (none for needles too short).
pub(crate) fn filter_bits<'a>(needles: impl Iterator<Item = &'a [u8]>) -> Vec<u32> {
    let mut bits: Vec<u32> = needles.flat_map(|n| n.windows(3).map(gram_bit)).collect();
    bits.sort_unstable();
    bits.dedup();
    bits
}

/// Reads a compressed block's filter (sealed, or written ahead compressed) and tells whether
/// the block may hold every needle whose `bits` are given (a corrupt filter admits the block).
pub(crate) fn filter_admits(file: &std::fs::File, b: &BlockMeta, bits: &[u32], buf: &mut Vec<u8>) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    buf.resize(FILTER_LEN, 0);
    file.read_exact_at(buf, b.offset + u64::from(b.len))?;
    let (set, crc) = buf.split_at(FILTER_BYTES);
    if crc32fast::hash(set) != u32::from_le_bytes(crc.try_into().unwrap()) {
        return Ok(true);
    }
    Ok(bits.iter().all(|&bit| set[(bit >> 3) as usize] & (1 << (bit & 7)) != 0))
}

/// Appends the index and footer of a sealed segment whose blocks are in `out`.
pub(crate) fn finish_segment(blocks: &[BlockMeta], out: &mut Vec<u8>) {
    let index_at = out.len() as u64;
    for b in blocks {
        out.extend_from_slice(&b.offset.to_le_bytes());
        out.extend_from_slice(&b.len.to_le_bytes());
        out.extend_from_slice(&b.raw_len.to_le_bytes());
        out.extend_from_slice(&b.first_seq.to_le_bytes());
        out.extend_from_slice(&b.count.to_le_bytes());
        out.extend_from_slice(&b.min_ts.to_le_bytes());
        out.extend_from_slice(&b.max_ts.to_le_bytes());
        out.extend_from_slice(&b.max_ingest.to_le_bytes());
        out.extend_from_slice(&b.crc.to_le_bytes());
    }
    let crc = crc32fast::hash(&out[index_at as usize..]);
    out.extend_from_slice(&index_at.to_le_bytes());
    out.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(SEG_MAGIC);
}

/// Reads a sealed segment's index (from the end of the file).
pub(crate) fn read_segment_index(file: &std::fs::File) -> Result<Vec<BlockMeta>> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata()?.len();
    let bad = |what: &str| Error::Corrupt(format!("sealed segment: {what}"));
    if size < (SEG_MAGIC.len() + SEG_FOOTER) as u64 {
        return Err(bad("too short"));
    }
    let mut footer = [0u8; SEG_FOOTER];
    file.read_exact_at(&mut footer, size - SEG_FOOTER as u64)?;
    if &footer[16..] != SEG_MAGIC {
        return Err(bad("bad footer"));
    }
    let index_at = le_u64(&footer, 0);
    let n = le_u32(&footer, 8) as usize;
    if index_at + (n * INDEX_ENTRY) as u64 + SEG_FOOTER as u64 != size {
        return Err(bad("bad index size"));
    }
    let mut index = vec![0u8; n * INDEX_ENTRY];
    file.read_exact_at(&mut index, index_at)?;
    if crc32fast::hash(&index) != le_u32(&footer, 12) {
        return Err(bad("index checksum mismatch"));
    }
    Ok(index
        .chunks_exact(INDEX_ENTRY)
        .map(|e| BlockMeta {
            offset: le_u64(e, 0),
            len: le_u32(e, 8),
            raw_len: le_u32(e, 12),
            first_seq: le_u64(e, 16),
            count: le_u32(e, 24),
            min_ts: le_i64(e, 28),
            max_ts: le_i64(e, 36),
            max_ingest: le_i64(e, 44),
            crc: le_u32(e, 52),
        })
        .collect())
}

/// Reads one block as raw (uncompressed) bytes into `buf`; `compressed` says whether it is
/// stored compressed (sealed, or written ahead so), whose CRC is then checked.
pub(crate) fn read_block(
    file: &std::fs::File,
    b: &BlockMeta,
    compressed: bool,
    scratch: &mut Vec<u8>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    if compressed {
        // Blocks are cut at ~128 KiB of events (one event is at most 256 KiB): a larger raw
        // length is damage, not a reason to allocate it.
        if b.raw_len > MAX_RAW_BLOCK {
            return Err(Error::Corrupt(format!("block at {} claims {} bytes", b.offset, b.raw_len)));
        }
        scratch.resize(b.len as usize, 0);
        file.read_exact_at(scratch, b.offset)?;
        if crc32fast::hash(scratch) != b.crc {
            return Err(Error::Corrupt(format!("block at {} fails its checksum", b.offset)));
        }
        buf.resize(b.raw_len as usize, 0);
        let n = lz4_flex::block::decompress_into(scratch, buf)
            .map_err(|e| Error::Corrupt(format!("block at {}: {e}", b.offset)))?;
        if n != buf.len() {
            return Err(Error::Corrupt(format!("block at {} decompresses short", b.offset)));
        }
    } else {
        buf.resize(b.len as usize, 0);
        file.read_exact_at(buf, b.offset)?;
    }
    Ok(())
}

/// A small metadata file: fields, then a CRC. (Written to a temporary file, synced, renamed.)
pub(crate) struct MetaWriter(pub Vec<u8>);

impl MetaWriter {
    pub fn new(magic: &[u8; 4]) -> Self {
        MetaWriter(magic.to_vec())
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn opt(&mut self, v: Option<i64>) -> &mut Self {
        self.0.push(v.is_some() as u8);
        self.i64(v.unwrap_or(0))
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.0.extend_from_slice(v);
        self
    }
    pub fn finish(mut self) -> Vec<u8> {
        let crc = crc32fast::hash(&self.0);
        self.0.extend_from_slice(&crc.to_le_bytes());
        self.0
    }
}

pub(crate) struct MetaReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> MetaReader<'a> {
    pub fn new(buf: &'a [u8], magic: &[u8; 4]) -> Result<Self> {
        let bad = || Error::Corrupt("metadata file fails its checksum".into());
        if buf.len() < 8 || &buf[..4] != magic {
            return Err(bad());
        }
        let (body, crc) = buf.split_at(buf.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
            return Err(bad());
        }
        Ok(MetaReader { buf: body, pos: 4 })
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos + n).ok_or_else(|| Error::Corrupt("metadata file too short".into()))?;
        self.pos += n;
        Ok(s)
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn opt(&mut self) -> Result<Option<i64>> {
        let some = self.take(1)?[0] != 0;
        let v = self.i64()?;
        Ok(some.then_some(v))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().unwrap()) as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_holds_every_window_of_the_messages() {
        let mixed = ["xxxxxxxxxxxx", "aaab", "abababab", "", "zz", "ERROR: 500 ms ====== done"].map(String::from);
        // Runs that end at every offset of the filter's 6-byte steps, and texts of every
        // length around one step (the tail after the last full load).
        let mut cases = vec![mixed.to_vec()];
        for n in 0..20 {
            cases.push(vec![format!("{}ab{}c", "=".repeat(n), "-".repeat(40 - n))]);
            cases.push(vec!["0123456789abcdefghij"[..n].to_string()]);
        }
        for messages in cases {
            let mut builder = BlockBuilder::default();
            for m in &messages {
                builder.push(1, 2, m.as_bytes());
            }
            let mut raw = Vec::new();
            let meta = builder.finish(0, &mut raw);
            let mut out = Vec::new();
            let meta = seal_block(meta, &raw, &mut out, &mut Vec::new()).unwrap();
            // What the filter must be: one bit per 3-byte window of the messages region.
            let mut want = vec![0u8; FILTER_BYTES];
            for w in block_messages(&raw).unwrap().windows(3) {
                let bit = gram_bit(w);
                want[(bit >> 3) as usize] |= 1 << (bit & 7);
            }
            let at = (meta.offset + u64::from(meta.len)) as usize;
            assert_eq!(&out[at..at + FILTER_BYTES], &want[..], "{messages:?}");
        }
    }

    #[test]
    fn a_record_of_columns_and_messages_is_the_block_pushed_whole() {
        let events: [(i64, &str); 4] = [(5, "first"), (3, ""), (9, "héllo wörld"), (-2, "last line")];
        let mut whole = BlockBuilder::default();
        for (ts, m) in events {
            whole.push(ts, 7, m.as_bytes());
        }
        let mut raw = Vec::new();
        let pushed = whole.finish(40, &mut raw);
        // Two records in one buffer written at file offset 100: the second's offsets count
        // the first.
        let mut cols = BlockBuilder::default();
        let mut out = Vec::new();
        let mut metas = Vec::new();
        for _ in 0..2 {
            for (ts, m) in events {
                cols.column(ts, 7, m.len());
            }
            metas.push(cols.finish_record(40, events.iter().map(|(_, m)| m.as_bytes()), &mut out, 100));
        }
        let mut file = vec![0u8; 100];
        file.extend_from_slice(&out);
        for (k, meta) in metas.iter().enumerate() {
            assert_eq!((meta.count, meta.min_ts, meta.max_ts, meta.max_ingest), (4, -2, 9, 7));
            assert_eq!(meta.raw_len, pushed.raw_len);
            assert_eq!(meta.offset as usize, 100 + WAL_HEADER + k * (WAL_HEADER + raw.len()));
            assert_eq!(&file[meta.offset as usize..][..meta.len as usize], &raw[..]);
            assert!(wal_record_intact(&file, meta));
        }
        let (parsed, valid) = parse_wal(&out);
        assert_eq!(valid, out.len());
        let shifted: Vec<_> = metas.iter().map(|m| BlockMeta { offset: m.offset - 100, ..*m }).collect();
        assert_eq!(parsed, shifted);
        let d = decode_block(&raw, 4).unwrap();
        assert_eq!((0..4).map(|i| d.message(i)).collect::<Vec<_>>(), events.map(|(_, m)| m));
    }

    #[test]
    fn a_full_block_is_written_ahead_as_it_is_sealed_unless_that_is_longer() {
        // A compressible block, then one LZ4 cannot shorten (four lines of random letters),
        // after 100 bytes of other records.
        let text: Vec<String> = (0..2000).map(|i| format!("GET /items/{i} 200 {}", "=".repeat(i % 30))).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut letter = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"[(x >> 58) as usize])
        };
        let noise: Vec<String> = (0..4).map(|_| (0..800).map(|_| letter()).collect()).collect();
        let (mut out, mut lz4) = (vec![7u8; 100], Vec::new());
        let mut written = Vec::new();
        for lines in [&text, &noise] {
            let mut b = BlockBuilder::default();
            for (i, l) in lines.iter().enumerate() {
                b.column(i as i64, 9, l.len());
            }
            let mut raw = Vec::new();
            let meta = b.finish_raw(3, lines.iter().map(|l| l.as_bytes()), &mut raw);
            let at = out.len();
            let stored = wal_record(meta, &raw, &mut out, 0, &mut lz4).unwrap();
            // What sealing the raw block makes, byte for byte.
            let (mut sealed, mut lz) = (Vec::new(), Vec::new());
            let want = seal_block(meta, &raw, &mut sealed, &mut lz).unwrap();
            written.push((at, stored, raw, want, sealed));
        }
        let (at, stored, raw, want, sealed) = &written[0];
        assert!(stored.compressed_in_wal() && stored.len < stored.raw_len / 4, "{stored:?}");
        assert_eq!(stored.offset as usize, at + WAL_HEADER + 4);
        assert_eq!((stored.len, stored.raw_len, stored.crc), (want.len, want.raw_len, want.crc));
        let body = &out[stored.offset as usize..][..stored.len as usize + FILTER_LEN];
        assert_eq!(body, &sealed[..]);
        let mut back = Vec::new();
        let file = tempfile::tempfile().unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &out, 0).unwrap();
        read_block(&file, stored, true, &mut Vec::new(), &mut back).unwrap();
        assert_eq!(&back, raw);
        // A raw length no block can have is damage, not an allocation.
        let huge = BlockMeta { raw_len: MAX_RAW_BLOCK + 1, ..*stored };
        assert!(matches!(read_block(&file, &huge, true, &mut Vec::new(), &mut back), Err(Error::Corrupt(_))));
        let (at, stored, raw, _, _) = &written[1];
        assert!(!stored.compressed_in_wal(), "{stored:?}");
        assert_eq!(&out[stored.offset as usize..][..stored.len as usize], &raw[..]);
        assert_eq!(stored.offset as usize, at + WAL_HEADER);
        // Read back as the store does at open: the same blocks; a torn tail is cut.
        let (parsed, valid) = parse_wal(&out[100..]);
        assert_eq!(valid, out.len() - 100);
        let shifted: Vec<_> = written.iter().map(|w| BlockMeta { offset: w.1.offset - 100, ..w.1 }).collect();
        assert_eq!(parsed, shifted);
        let torn = &out[100..out.len() - 1];
        assert_eq!(parse_wal(torn), (shifted[..1].to_vec(), written[1].0 - 100));
        // Cut anywhere or damaged anywhere: a prefix of the records, never a panic.
        let file = &out[100..];
        for cut in (0..file.len()).step_by(97).chain(file.len() - 64..file.len()) {
            let (p, valid) = parse_wal(&file[..cut]);
            assert!(valid <= cut && shifted.starts_with(&p), "cut at {cut}");
        }
        for at in (0..file.len()).step_by(89) {
            let mut bad = file.to_vec();
            bad[at] ^= 0x5a;
            let (p, _) = parse_wal(&bad);
            assert!(p.len() < 2 && shifted.starts_with(&p), "damaged at {at}");
        }
        // A compressed record with a sound CRC but no room for its block and filter, one that
        // would not be shorter than its raw block, or one claiming more than a block can hold:
        // the end of what is read.
        let meta = written[0].3;
        let cases = [(1000u32, 4 + FILTER_LEN), (10, 4 + FILTER_LEN + 10), (MAX_RAW_BLOCK + 1, 4 + FILTER_LEN + 10)];
        for (raw_len, body_len) in cases {
            let mut record = vec![0u8; WAL_HEADER + body_len];
            record[WAL_HEADER..WAL_HEADER + 4].copy_from_slice(&raw_len.to_le_bytes());
            close_record(&mut record, WAL_MAGIC_LZ4, &meta);
            assert_eq!(parse_wal(&record), (Vec::new(), 0));
        }
    }
}
