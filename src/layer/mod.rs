//! Layer tarballs: a deterministic tar from a directory ([`write_layer`]), compressed on all
//! cores, with the diffID and the compressed digest computed in the same pass; and the safe
//! application of a tar onto a directory ([`apply`]). Never mounts anything.

pub mod apply;
pub mod estimate;
pub mod facts;
pub mod pargz;
pub mod paths;
mod writer;

pub use apply::{apply_layer, ApplyError, ApplyOptions, ApplyReport};
pub use writer::{write_tree, WriteOptions};

use std::io::{self, BufRead, BufReader, Read, Write};

use crate::oci::{media, Digest, HashingWriter};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    None,
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl Compression {
    pub const GZIP: Compression = Compression::Gzip { level: 6 };
    pub const ZSTD: Compression = Compression::Zstd { level: 3 };

    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => media::OCI_LAYER,
            Compression::Gzip { .. } => media::OCI_LAYER_GZIP,
            Compression::Zstd { .. } => media::OCI_LAYER_ZSTD,
        }
    }

    /// `gzip`, `zstd`, `none`, or with a level: `gzip:1`, `zstd:19`.
    pub fn parse(s: &str) -> Option<Compression> {
        if let Some((kind, level)) = s.split_once(':') {
            return match kind {
                "gzip" => level
                    .parse()
                    .ok()
                    .filter(|l| (1..=9).contains(l))
                    .map(|level| Compression::Gzip { level }),
                "zstd" => level
                    .parse()
                    .ok()
                    .filter(|l| (1..=22).contains(l))
                    .map(|level| Compression::Zstd { level }),
                _ => None,
            };
        }
        match s {
            "gzip" => Some(Compression::GZIP),
            "zstd" => Some(Compression::ZSTD),
            "none" | "uncompressed" => Some(Compression::None),
            _ => None,
        }
    }
}

/// What a layer blob is, once written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the blob as stored.
    pub digest: Digest,
    pub size: u64,
    pub uncompressed_size: u64,
    pub media_type: &'static str,
}

fn threads() -> usize {
    crate::cores()
}

enum Enc<W: Write> {
    /// Uncompressed: the blob is the tar, so its digest is the diffID (hashed once).
    None(W),
    Gzip(pargz::ParGzEncoder<HashingWriter<W>>),
    Zstd(zstd::stream::Encoder<'static, HashingWriter<W>>),
}

/// A `Write` for the uncompressed tar stream: hashes it (diffID), compresses it, and hashes the
/// compressed bytes (digest) on their way to `out`, all in one pass.
pub struct LayerSink<W: Write> {
    tar_hash: HashingWriter<io::Sink>,
    enc: Enc<W>,
    compression: Compression,
}

impl<W: Write> LayerSink<W> {
    pub fn new(out: W, compression: Compression) -> io::Result<Self> {
        let enc = match compression {
            Compression::None => Enc::None(out),
            Compression::Gzip { level } => Enc::Gzip(pargz::ParGzEncoder::new(
                HashingWriter::new(out),
                level,
                threads(),
            )),
            Compression::Zstd { level } => {
                let mut e = zstd::stream::Encoder::new(HashingWriter::new(out), level)?;
                let n = threads() as u32;
                if n > 1 {
                    e.multithread(n)?;
                }
                Enc::Zstd(e)
            }
        };
        Ok(LayerSink {
            tar_hash: HashingWriter::new(io::sink()),
            enc,
            compression,
        })
    }

    pub fn finish(self) -> io::Result<(W, LayerInfo)> {
        let (_, diff_id, uncompressed_size) = self.tar_hash.finish();
        let media_type = self.compression.media_type();
        let hw = match self.enc {
            Enc::None(out) => {
                let info = LayerInfo {
                    digest: diff_id.clone(),
                    diff_id,
                    size: uncompressed_size,
                    uncompressed_size,
                    media_type,
                };
                return Ok((out, info));
            }
            Enc::Gzip(g) => g.finish()?,
            Enc::Zstd(z) => z.finish()?,
        };
        let (out, digest, size) = hw.finish();
        Ok((
            out,
            LayerInfo {
                diff_id,
                digest,
                size,
                uncompressed_size,
                media_type,
            },
        ))
    }
}

impl<W: Write> Write for LayerSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.enc {
            Enc::None(w) => w.write(buf)?,
            Enc::Gzip(g) => g.write(buf)?,
            Enc::Zstd(z) => z.write(buf)?,
        };
        self.tar_hash.write_all(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compress an existing tar stream into a layer blob.
pub fn compress_tar<R: Read, W: Write>(
    mut tar: R,
    out: W,
    compression: Compression,
) -> io::Result<(W, LayerInfo)> {
    let mut sink = LayerSink::new(out, compression)?;
    io::copy(&mut tar, &mut sink)?;
    sink.finish()
}

/// What a blob's first bytes say about its compression.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::GZIP
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::ZSTD
    } else {
        Compression::None
    }
}

/// A reader of the uncompressed tar inside a layer blob, whatever its compression.
pub fn decompress<'a, R: Read + 'a>(r: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(256 * 1024, r);
    let kind = sniff(br.fill_buf()?);
    Ok(match kind {
        Compression::Gzip { .. } => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd { .. } => Box::new(zstd::stream::Decoder::with_buffer(br)?),
        Compression::None => Box::new(br),
    })
}

/// [`decompress`] on a thread of its own, handing 1 MiB chunks over a bounded queue: inflating
/// a layer (CPU) overlaps with applying it (file system calls), so an unpack takes about the
/// longer of the two instead of their sum. At most 8 chunks wait, so memory stays bounded. The
/// same thread hashes the tar, so [`Pipelined::finish`] gives its diffID at no cost to the reader.
pub fn decompress_pipelined<R: Read + Send + 'static>(r: R) -> io::Result<Pipelined> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
    let thread = std::thread::Builder::new()
        .name("decompress".into())
        .spawn(move || {
            let mut d = match decompress(r) {
                Ok(d) => d,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return None;
                }
            };
            pump(&mut d, &tx)
        })?;
    Ok(Pipelined {
        rx,
        cur: Vec::new(),
        pos: 0,
        thread: Some(thread),
    })
}

/// Send `d` in chunks; the sha256 of everything when it all went, None after an error.
fn pump(d: &mut dyn Read, tx: &std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>) -> Option<Digest> {
    let mut hash = crate::oci::Sha256::new();
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0;
        while n < buf.len() {
            match d.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return None;
                }
            }
        }
        if n == 0 {
            return Some(hash.finish());
        }
        buf.truncate(n);
        hash.update(&buf);
        if tx.send(Ok(buf)).is_err() {
            return None;
        }
    }
}

/// The reading end of [`decompress_pipelined`].
pub struct Pipelined {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    thread: Option<std::thread::JoinHandle<Option<Digest>>>,
}

impl Pipelined {
    /// Read what is left (a tar's end padding) and return the sha256 of the whole stream.
    pub fn finish(mut self) -> io::Result<Digest> {
        io::copy(&mut self, &mut io::sink())?;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Some(d))) => Ok(d),
            _ => Err(io::Error::other("the decompression thread failed")),
        }
    }
}

impl Read for Pipelined {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    self.cur = b;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The producer finished (or died, and said why in its last message).
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What the path of a layer's tar entry says: a path (relative, cleaned), a whiteout deleting
/// one, or a directory made opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarPath {
    /// The root itself (`./`): nothing to record.
    Root,
    Entry(String),
    Deleted(String),
    Opaque(String),
}

/// A layer path as tar headers and lookups spell it (`./usr/`, `/usr`), relative and without
/// a trailing slash (`usr`).
pub fn rel_path(raw: &str) -> &str {
    raw.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
}

impl TarPath {
    pub fn of(raw: &str) -> TarPath {
        let path = rel_path(raw);
        if path.is_empty() {
            return TarPath::Root;
        }
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", path),
        };
        if name == ".wh..wh..opq" {
            return TarPath::Opaque(dir.to_string());
        }
        match name.strip_prefix(".wh.") {
            Some(gone) if dir.is_empty() => TarPath::Deleted(gone.to_string()),
            Some(gone) => TarPath::Deleted(format!("{dir}/{gone}")),
            None => TarPath::Entry(path.to_string()),
        }
    }
}

/// The diffID (the sha256 of the uncompressed tar) of a layer blob whose bytes arrive in
/// pieces, computed on a thread of its own while they arrive: a download checks a layer's
/// content in the same pass as its digest, without keeping the tar anywhere. At most 8 pieces
/// wait, so memory stays bounded and a slow inflate slows the download instead of piling up.
pub struct DiffIdTee {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<TeeResult>>,
}

/// The diffID and tar length of a layer, and its paths when the tar could be read as one.
type TeeResult = io::Result<(Digest, u64, Option<paths::LayerPaths>)>;

/// The inflated tar a [`DiffIdTee`] reads its entries from.
pub type TeeTar = crate::oci::HashingReader<io::BufReader<Box<dyn Read>>>;

/// Something that takes a layer's tar entries in order as [`DiffIdTee`]'s pass reads them (the
/// package scan of an SBOM, which rides the pass instead of inflating the layer again).
pub trait EntrySink: Send {
    /// One entry, after the pass took its path (an `etc/passwd` or `etc/group` entry's data
    /// has been read by then). An error ends the sink's part: it gets no more entries and no
    /// [`EntrySink::end`]; the pass goes on.
    fn add(&mut self, entry: &mut tar::Entry<'_, TeeTar>) -> io::Result<()>;
    /// The tar's entries all went by (not called when the stream is no tar).
    fn end(&mut self);
}

impl DiffIdTee {
    pub fn new() -> io::Result<Self> {
        Self::with_sink(None)
    }

    /// A tee whose pass also feeds every tar entry to `sink`.
    pub fn with_sink(mut sink: Option<Box<dyn EntrySink>>) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let thread = std::thread::Builder::new()
            .name("diffid".into())
            .spawn(move || {
                let tar = decompress(Chunks {
                    rx,
                    cur: Vec::new(),
                    pos: 0,
                })?;
                // The layer's paths in the same pass (the tar's headers, as they go by), then
                // whatever follows the end-of-archive blocks, so every byte is hashed. A
                // stream that is not a tar still gets its digest (and no paths).
                let mut archive = tar::Archive::new(crate::oci::HashingReader::new(
                    io::BufReader::with_capacity(256 * 1024, tar),
                ));
                let found = entries_to(&mut archive, &mut sink).ok();
                if found.is_some() {
                    if let Some(s) = &mut sink {
                        s.end();
                    }
                }
                let mut h = archive.into_inner();
                io::copy(&mut h, &mut io::sink())?;
                let (digest, len) = h.finish();
                Ok((digest, len, found))
            })?;
        Ok(DiffIdTee {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// The next bytes of the blob. When the inflater has already failed, they are dropped: the
    /// failure comes out of [`DiffIdTee::finish`].
    pub fn feed(&mut self, data: &[u8]) {
        if let Some(tx) = &self.tx {
            if tx.send(data.to_vec()).is_err() {
                self.tx = None;
            }
        }
    }

    /// The end of the blob: its diffID, the length of its tar and its paths, or why it is not
    /// a layer.
    pub fn finish(mut self) -> TeeResult {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("the diffID thread died")),
        }
    }
}

impl Drop for DiffIdTee {
    fn drop(&mut self) {
        // Closing the queue ends the thread (a truncated stream is an error it returns to no one).
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The paths of the tar `archive`, each entry also given to `sink` (dropped at its first
/// error).
fn entries_to(
    archive: &mut tar::Archive<TeeTar>,
    sink: &mut Option<Box<dyn EntrySink>>,
) -> io::Result<paths::LayerPaths> {
    let mut out = paths::LayerPaths::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        out.add(&mut entry)?;
        if let Some(s) = sink {
            if s.add(&mut entry).is_err() {
                *sink = None;
            }
        }
    }
    Ok(out)
}

/// The reading end of [`DiffIdTee`]'s queue; a closed queue is the end of the stream.
struct Chunks {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.cur = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_decompression_gives_the_same_bytes_and_errors() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        for c in [Compression::None, Compression::GZIP, Compression::ZSTD] {
            let (blob, _) = compress_tar(&data[..], Vec::new(), c).unwrap();
            let mut back = vec![0u8; 1000];
            let mut p = decompress_pipelined(std::io::Cursor::new(blob)).unwrap();
            p.read_exact(&mut back).unwrap();
            assert_eq!(back, data[..1000], "{c:?}");
            // finish reads the rest and hashes all of it.
            assert_eq!(p.finish().unwrap(), Digest::of(&data), "{c:?}");
        }
        // A truncated gzip stream is an error, not a short read.
        let (blob, _) = compress_tar(&data[..], Vec::new(), Compression::GZIP).unwrap();
        let cut = blob[..blob.len() / 2].to_vec();
        let mut back = Vec::new();
        assert!(decompress_pipelined(std::io::Cursor::new(cut))
            .unwrap()
            .read_to_end(&mut back)
            .is_err());
        let cut = blob[..blob.len() / 2].to_vec();
        assert!(decompress_pipelined(std::io::Cursor::new(cut))
            .unwrap()
            .finish()
            .is_err());
    }

    #[test]
    fn diffid_tee_matches_the_sink_and_rejects_what_is_not_a_layer() {
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 193) as u8).collect();
        for c in [Compression::None, Compression::GZIP, Compression::ZSTD] {
            let (blob, info) = compress_tar(&data[..], Vec::new(), c).unwrap();
            let mut tee = DiffIdTee::new().unwrap();
            // Uneven pieces, as a network delivers them.
            for piece in blob.chunks(7919) {
                tee.feed(piece);
            }
            let (d, n, _) = tee.finish().unwrap();
            assert_eq!((d, n), (info.diff_id, data.len() as u64), "{c:?}");
        }
        // A real layer: its paths come out of the same pass.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "app/main.py", &b"x=1"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let (blob, info) = compress_tar(&tar[..], Vec::new(), Compression::GZIP).unwrap();
        let mut tee = DiffIdTee::new().unwrap();
        tee.feed(&blob);
        let (d, n, p) = tee.finish().unwrap();
        assert_eq!((d, n), (info.diff_id.clone(), tar.len() as u64));
        assert_eq!(
            p.unwrap().entries,
            vec![("app/main.py".to_string(), paths::Kind::File)]
        );
        // A sink sees every entry of the same pass, then its end.
        struct Names(std::sync::Arc<std::sync::Mutex<Vec<String>>>);
        impl EntrySink for Names {
            fn add(&mut self, e: &mut tar::Entry<'_, TeeTar>) -> io::Result<()> {
                let mut body = String::new();
                e.read_to_string(&mut body)?;
                let name = e.path()?.display().to_string();
                self.0.lock().unwrap().push(format!("{name}={body}"));
                Ok(())
            }
            fn end(&mut self) {
                self.0.lock().unwrap().push("end".into());
            }
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tee = DiffIdTee::with_sink(Some(Box::new(Names(seen.clone())))).unwrap();
        tee.feed(&blob);
        let (d, _, p) = tee.finish().unwrap();
        assert_eq!(d, info.diff_id);
        assert_eq!(p.unwrap().entries.len(), 1);
        assert_eq!(*seen.lock().unwrap(), vec!["app/main.py=x=1", "end"]);
        // A stream that is no tar: its digest, no paths, and no end for the sink.
        seen.lock().unwrap().clear();
        let mut tee = DiffIdTee::with_sink(Some(Box::new(Names(seen.clone())))).unwrap();
        tee.feed(&[0x55; 1024]);
        let (d, _, p) = tee.finish().unwrap();
        assert_eq!((d, p), (Digest::of(&[0x55; 1024]), None));
        assert!(seen.lock().unwrap().is_empty());
        // A gzip stream cut short is an error; so is one that is dropped half-way (no hang).
        let (blob, _) = compress_tar(&data[..], Vec::new(), Compression::GZIP).unwrap();
        let mut tee = DiffIdTee::new().unwrap();
        tee.feed(&blob[..blob.len() / 2]);
        assert!(tee.finish().is_err());
        let mut tee = DiffIdTee::new().unwrap();
        tee.feed(&blob[..blob.len() / 3]);
        drop(tee);
        // Garbage after a valid gzip header: the inflater fails, later pieces are dropped.
        let mut bad = blob[..20].to_vec();
        bad.extend(std::iter::repeat_n(0xAB, 3_000_000));
        let mut tee = DiffIdTee::new().unwrap();
        for piece in bad.chunks(65536) {
            tee.feed(piece);
        }
        assert!(tee.finish().is_err());
    }

    #[test]
    fn sink_digests_match_separate_hashes() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 97) as u8).collect();
        for c in [Compression::None, Compression::GZIP, Compression::ZSTD] {
            let (blob, info) = compress_tar(&data[..], Vec::new(), c).unwrap();
            assert_eq!(info.diff_id, Digest::of(&data));
            assert_eq!(info.digest, Digest::of(&blob));
            assert_eq!(info.size, blob.len() as u64);
            assert_eq!(info.uncompressed_size, data.len() as u64);
            let mut back = Vec::new();
            decompress(&blob[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{c:?}");
        }
    }
}
