//! gzip on all cores, as pigz does: the input is cut into blocks, each block is deflated on its
//! own by a worker thread, ending on a byte boundary (sync flush) so the pieces concatenate into
//! one valid deflate stream inside one gzip member. The CRC-32 and size trailer are computed on
//! the caller's thread. At most `2 × threads` blocks are in flight, so memory stays flat.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress};

/// Input per block. Big enough that the per-block restart of the dictionary costs little ratio.
pub const BLOCK: usize = 1 << 20;

type Job = (u64, Vec<u8>, bool);
type Done = (u64, io::Result<Vec<u8>>);

pub struct ParGzEncoder<W: Write> {
    out: Option<W>,
    level: u32,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    next_seq: u64,
    next_write: u64,
    in_flight: usize,
    max_in_flight: usize,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    pending: BTreeMap<u64, Vec<u8>>,
    workers: Vec<JoinHandle<()>>,
    header_written: bool,
}

impl<W: Write> ParGzEncoder<W> {
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        let threads = threads.max(1);
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads * 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&job_rx);
                let tx = done_tx.clone();
                std::thread::spawn(move || loop {
                    let job = {
                        let guard = match rx.lock() {
                            Ok(g) => g,
                            Err(_) => return,
                        };
                        guard.recv()
                    };
                    let Ok((seq, data, last)) = job else { return };
                    if tx.send((seq, deflate_block(&data, level, last))).is_err() {
                        return;
                    }
                })
            })
            .collect();
        ParGzEncoder {
            out: Some(out),
            level,
            buf: Vec::with_capacity(BLOCK),
            crc: crc32fast::Hasher::new(),
            total: 0,
            next_seq: 0,
            next_write: 0,
            in_flight: 0,
            max_in_flight: threads * 2,
            jobs: Some(job_tx),
            done: done_rx,
            pending: BTreeMap::new(),
            workers,
            header_written: false,
        }
    }

    fn out(&mut self) -> &mut W {
        self.out.as_mut().expect("encoder used after finish")
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            let xfl = if self.level >= 9 {
                2
            } else if self.level <= 1 {
                4
            } else {
                0
            };
            // No name, mtime 0 (reproducible), OS "unknown".
            let header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255];
            self.out().write_all(&header)?;
            self.header_written = true;
        }
        Ok(())
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(if last { 0 } else { BLOCK }),
        );
        while self.in_flight >= self.max_in_flight {
            self.collect_one()?;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight += 1;
        self.jobs
            .as_ref()
            .expect("encoder used after finish")
            .send((seq, data, last))
            .map_err(|_| io::Error::other("gzip worker stopped"))?;
        Ok(())
    }

    /// Wait for one finished block and write every block that is now in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let (seq, res) = self
            .done
            .recv()
            .map_err(|_| io::Error::other("gzip worker stopped"))?;
        self.in_flight -= 1;
        self.pending.insert(seq, res?);
        while let Some(block) = self.pending.remove(&self.next_write) {
            self.write_header()?;
            self.out().write_all(&block)?;
            self.next_write += 1;
        }
        Ok(())
    }

    /// Flush every block, write the trailer and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.write_header()?;
        self.submit(true)?;
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        let crc = self.crc.clone().finalize();
        let size = (self.total & 0xffff_ffff) as u32;
        let mut out = self.out.take().expect("finish once");
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&size.to_le_bytes())?;
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        Ok(out)
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.crc.update(&data[..n]);
        self.total += n as u64;
        if self.buf.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParGzEncoder<W> {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Raw deflate of one block: sync-flushed (byte aligned, not final) unless it is the last.
fn deflate_block(data: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(64 * 1024);
        }
        let before_in = c.total_in();
        let status = c
            .compress_vec(input, &mut out, flush)
            .map_err(io::Error::other)?;
        let used = (c.total_in() - before_in) as usize;
        input = &input[used..];
        match status {
            flate2::Status::StreamEnd => break,
            _ if !last && input.is_empty() && out.capacity() > out.len() => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(data: &[u8], threads: usize) {
        let mut enc = ParGzEncoder::new(Vec::new(), 6, threads);
        for chunk in data.chunks(77_777) {
            enc.write_all(chunk).unwrap();
        }
        let gz = enc.finish().unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        // One member: a multi-member-unaware reader gets everything too.
        let mut single = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut single)
            .unwrap();
        assert_eq!(single.len(), data.len());
    }

    #[test]
    fn round_trips_empty_small_and_multi_block() {
        roundtrip(b"", 2);
        roundtrip(b"hello", 2);
        let big: Vec<u8> = (0..(3 * BLOCK + 12345))
            .map(|i| ((i * 7919) % 251) as u8)
            .collect();
        roundtrip(&big, 2);
        roundtrip(&big, 1);
    }

    #[test]
    fn gunzip_accepts_it() {
        let data: Vec<u8> = (0..(2 * BLOCK + 5)).map(|i| (i % 13) as u8).collect();
        let mut enc = ParGzEncoder::new(Vec::new(), 6, 2);
        enc.write_all(&data).unwrap();
        let gz = enc.finish().unwrap();
        let mut child = std::process::Command::new("gzip")
            .args(["-dc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip is installed");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&gz));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }
}
