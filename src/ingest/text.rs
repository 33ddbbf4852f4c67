//! The bytes of a text source (CSV, JSON) as UTF-8: decompressed (gzip, zstd, bzip2, by
//! extension or `compression:`), decoded from a legacy `encoding:` (encoding_rs),
//! without a byte-order mark, streamed so memory stays bounded. And CSV record
//! boundaries as the parser sees them (csv-core, quotes and all), so a file is only
//! ever cut between records.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use encoding_rs::{CoderResult, Decoder, Encoding};

use crate::manifest::types::{Compression, SourceSpec};

/// The compression of `path` under `source`: declared, else from the extension.
pub fn compression_of(path: &str, source: &SourceSpec) -> Compression {
    source
        .compression
        .unwrap_or_else(|| Compression::from_path(Path::new(path)))
}

/// The declared text encoding, when it is not UTF-8 (validated at load).
pub fn encoding_of(source: &SourceSpec) -> Option<&'static Encoding> {
    let label = source.text_encoding()?;
    let e = Encoding::for_label(label.as_bytes())?;
    (e != encoding_rs::UTF_8).then_some(e)
}

/// Whether a CSV file can be cut into byte ranges read in parallel: plain bytes in
/// an encoding where `\n` and the quote are single bytes of their own.
pub fn seekable(path: &str, source: &SourceSpec) -> bool {
    compression_of(path, source) == Compression::None
        && encoding_of(source).is_none_or(|e| e.is_single_byte())
}

/// A reader of the file's text as UTF-8: decompressed, decoded, BOM dropped.
pub fn open(
    location: &Path,
    path: &str,
    source: &SourceSpec,
) -> std::io::Result<Box<dyn Read + Send>> {
    let file = BufReader::with_capacity(256 << 10, File::open(location)?);
    let raw: Box<dyn Read + Send> = match compression_of(path, source) {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(file)),
    };
    Ok(match encoding_of(source) {
        // encoding_rs drops a BOM of the declared encoding (and follows a UTF-16 BOM).
        Some(e) => Box::new(Transcode::new(raw, e.new_decoder())),
        None => Box::new(SkipBom::new(raw)),
    })
}

/// Decodes `bytes` of a single-byte encoding (a chunk of a seekable file) to UTF-8.
pub fn decode_chunk(bytes: Vec<u8>, source: &SourceSpec) -> Vec<u8> {
    match encoding_of(source) {
        Some(e) => {
            let (text, _) = e.decode_without_bom_handling(&bytes);
            text.into_owned().into_bytes()
        }
        None => bytes,
    }
}

/// Length of a UTF-8 byte-order mark at the start of `head` (0 or 3).
pub fn bom_len(head: &[u8]) -> usize {
    if head.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    }
}

/// Drops a UTF-8 BOM at the start of the stream.
struct SkipBom<R> {
    inner: R,
    checked: bool,
    pending: Vec<u8>,
}

impl<R: Read> SkipBom<R> {
    fn new(inner: R) -> Self {
        SkipBom {
            inner,
            checked: false,
            pending: Vec::new(),
        }
    }
}

impl<R: Read> Read for SkipBom<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.checked {
            self.checked = true;
            let mut head = [0u8; 3];
            let mut n = 0;
            while n < 3 {
                let k = self.inner.read(&mut head[n..])?;
                if k == 0 {
                    break;
                }
                n += k;
            }
            let skip = bom_len(&head[..n]);
            self.pending = head[skip..n].to_vec();
        }
        if !self.pending.is_empty() {
            let n = self.pending.len().min(buf.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

/// A reader decoding another encoding to UTF-8 as it goes (malformed sequences become
/// U+FFFD, as every decoder of legacy text does).
struct Transcode<R> {
    inner: R,
    decoder: Decoder,
    input: Vec<u8>,
    start: usize,
    end: usize,
    output: Vec<u8>,
    out_start: usize,
    eof: bool,
}

impl<R: Read> Transcode<R> {
    fn new(inner: R, decoder: Decoder) -> Self {
        Transcode {
            inner,
            decoder,
            input: vec![0; 64 << 10],
            start: 0,
            end: 0,
            output: Vec::new(),
            out_start: 0,
            eof: false,
        }
    }
}

impl<R: Read> Read for Transcode<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.out_start < self.output.len() {
                let n = (self.output.len() - self.out_start).min(buf.len());
                buf[..n].copy_from_slice(&self.output[self.out_start..self.out_start + n]);
                self.out_start += n;
                return Ok(n);
            }
            if self.eof && self.start == self.end {
                return Ok(0);
            }
            if self.start == self.end && !self.eof {
                self.start = 0;
                self.end = self.inner.read(&mut self.input)?;
                if self.end == 0 {
                    self.eof = true;
                }
            }
            let want = self
                .decoder
                .max_utf8_buffer_length(self.end - self.start)
                .unwrap_or(256 << 10)
                .max(16);
            self.output.clear();
            self.output.resize(want, 0);
            self.out_start = 0;
            let (result, read, written, _) = self.decoder.decode_to_utf8(
                &self.input[self.start..self.end],
                &mut self.output,
                self.eof,
            );
            self.start += read;
            self.output.truncate(written);
            if self.eof && result == CoderResult::InputEmpty && written == 0 {
                return Ok(0);
            }
        }
    }
}

/// The CSV dialect lakectl parses with (arrow-csv's, on csv-core).
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    pub delimiter: u8,
    pub quote: u8,
}

impl Dialect {
    fn core(&self) -> csv_core::Reader {
        csv_core::ReaderBuilder::new()
            .delimiter(self.delimiter)
            .quote(self.quote)
            .build()
    }

    /// Byte offsets where each complete record of `data` ends (just past its line
    /// terminator), as the CSV parser splits them: a newline inside quotes is part of
    /// the field. With `last_is_complete`, bytes after the last terminator are a
    /// record too (the end of the file).
    pub fn record_ends(&self, data: &[u8], last_is_complete: bool) -> Vec<usize> {
        let mut finder = CutFinder::new(*self);
        let mut result = Vec::new();
        let mut pos = 0usize;
        while pos < data.len() {
            match finder.feed(&data[pos..]) {
                Some(n) => {
                    pos += n;
                    result.push(pos);
                }
                None => break,
            }
        }
        if last_is_complete && result.last().copied().unwrap_or(0) < data.len() {
            // Bytes after the last terminator, unless they are only a line ending.
            let rest = &data[result.last().copied().unwrap_or(0)..];
            if rest.iter().any(|b| *b != b'\n' && *b != b'\r') {
                result.push(data.len());
            }
        }
        result
    }

    /// The fields of the first record of `data` (a header, as stored) and the offset
    /// just past it.
    pub fn first_record(&self, data: &[u8]) -> Result<(Vec<Vec<u8>>, usize), String> {
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(self.delimiter)
            .quote(self.quote)
            .flexible(true)
            .from_reader(data);
        let mut rec = csv::ByteRecord::new();
        match r.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => return Ok((Vec::new(), data.len())),
            Err(e) => return Err(e.to_string()),
        }
        let end = r.position().byte() as usize;
        Ok((rec.iter().map(<[u8]>::to_vec).collect(), end))
    }
}

/// A scanner that finds cut points of a seekable CSV file from front to back, carrying
/// the parser's quote state across blocks.
pub struct CutFinder {
    reader: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl CutFinder {
    pub fn new(d: Dialect) -> Self {
        CutFinder {
            reader: d.core(),
            out: vec![0u8; 64 << 10],
            ends: vec![0usize; 1024],
        }
    }

    /// Feeds `block` (the bytes after the last call's); returns the offset in it just
    /// past the first record that ends in it, if one does (the rest is fed again).
    pub fn feed(&mut self, block: &[u8]) -> Option<usize> {
        let mut pos = 0usize;
        while pos < block.len() {
            let (r, nin, _, _) =
                self.reader
                    .read_record(&block[pos..], &mut self.out, &mut self.ends);
            pos += nin;
            match r {
                csv_core::ReadRecordResult::Record => return Some(pos),
                csv_core::ReadRecordResult::OutputFull => {
                    let n = self.out.len() * 2;
                    self.out.resize(n, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                csv_core::ReadRecordResult::InputEmpty | csv_core::ReadRecordResult::End => break,
            }
        }
        None
    }

    /// Feeds `block` whole; returns the offset just past the last record that ended
    /// in it, if any.
    pub fn feed_all(&mut self, block: &[u8]) -> Option<usize> {
        let mut pos = 0usize;
        let mut last = None;
        while pos < block.len() {
            match self.feed(&block[pos..]) {
                Some(n) => {
                    pos += n;
                    last = Some(pos);
                }
                None => break,
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ends_keep_quoted_newlines_inside_a_record() {
        let d = Dialect {
            delimiter: b',',
            quote: b'"',
        };
        let data = b"1,\"line one\nline two\",0.5\n2,\"a \"\"q\"\"\",1\n3,x";
        let ends = d.record_ends(data, false);
        assert_eq!(ends, vec![26, 40]);
        let ends = d.record_ends(data, true);
        assert_eq!(ends, vec![26, 40, data.len()]);
        let (names, end) = d.first_record(b"\"a\"\"b\",\"c\nd\", e \n1,2,3\n").unwrap();
        assert_eq!(
            names,
            vec![b"a\"b".to_vec(), b"c\nd".to_vec(), b" e ".to_vec()]
        );
        assert_eq!(end, 17);
    }

    #[test]
    fn transcode_and_bom() {
        let mut s = String::new();
        let latin1: &[u8] = b"caf\xe9\n";
        Transcode::new(latin1, encoding_rs::WINDOWS_1252.new_decoder())
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "café\n");
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("a,b\n".encode_utf16().flat_map(|u| u.to_le_bytes()))
            .collect();
        let mut s = String::new();
        Transcode::new(&utf16[..], encoding_rs::UTF_16LE.new_decoder())
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "a,b\n");
        let mut s = String::new();
        SkipBom::new(&b"\xEF\xBB\xBFid\n"[..])
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "id\n");
    }
}
