//! Keeping a serving process's memory fast to touch after an idle spell.
//!
//! A machine that reclaims idle memory proactively (a DAMON page-out scheme: regions nobody
//! touched for a minute) keeps aging the pages of a server that idles. Locked pages stay
//! resident (`keep_resident`), but an aged page is slow to touch again: no page fault, yet
//! 1-1.7 µs more per page on first touch (measured on a virtual machine). A search in a large
//! index touches thousands of pages the last request did not, so the first request after an
//! idle spell took tens of milliseconds (BENCHMARKS.md, "After an idle spell"). Reading one byte
//! of every resident page more often than the reclaim's idle threshold keeps the pages out of
//! its sight for a small, steady cost.
//!
//! The bytes are read through the kernel (`process_vm_readv` of this process), not through
//! pointers: a mapping can go away between reading `/proc/self/maps` and touching it (an index
//! swapped out), and the kernel answers that with an error where a pointer would fault. Only
//! pages already resident (`/proc/self/pagemap`) are read, so warming never brings in a file
//! page the process did not use.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

/// Pages read per `process_vm_readv` call (the kernel's `IOV_MAX`).
const PAGES_PER_CALL: usize = 1024;
/// Pages whose residency is read from `pagemap` at once.
const PAGES_PER_PAGEMAP_READ: usize = 8192;
/// `pagemap`'s "page present" bit.
const PRESENT: u64 = 1 << 63;

/// A thread that touches the process's resident pages every `interval` until dropped.
pub struct KeepWarm {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl KeepWarm {
    pub fn start(interval: Duration) -> io::Result<KeepWarm> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("recsys-keep-warm".into())
            .spawn(move || {
                // A pass over a large index's pages is most of a second of one core: requests
                // come first (the nice value is the thread's own on Linux).
                let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
                warm_until_stopped(&stopped, interval)
            })?;
        Ok(KeepWarm {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

fn warm_until_stopped(stopped: &mpsc::Receiver<()>, interval: Duration) {
    loop {
        if stopped.recv_timeout(interval) != Err(RecvTimeoutError::Timeout) {
            return;
        }
        let started = Instant::now();
        match touch_resident_pages() {
            Ok(pages) => {
                metrics::gauge!("recsys_memory_warm_pages").set(pages as f64);
                metrics::histogram!("recsys_memory_warm_pass_seconds")
                    .record(started.elapsed().as_secs_f64());
            }
            Err(error) => {
                tracing::warn!(%error, "keeping memory warm failed; stopped");
                return;
            }
        }
    }
}

impl Drop for KeepWarm {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one byte of every resident page of the process's readable mappings; returns how many
/// pages it read.
pub fn touch_resident_pages() -> io::Result<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut toucher = Toucher::new()?;
    for range in readable_ranges(&maps) {
        toucher.touch(range)?;
    }
    toucher.flush()?;
    Ok(toucher.pages_read)
}

/// The address ranges of `/proc/<pid>/maps` text worth warming: readable, and neither the
/// kernel's own pages (`[vvar]`, `[vdso]`, `[vsyscall]`) nor a device's.
fn readable_ranges(maps: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    maps.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let permissions = fields.next()?;
        // offset, device, inode, then the path (absent for anonymous memory)
        let path = fields.nth(3).unwrap_or("");
        if !permissions.starts_with('r') || path.starts_with("[v") || path.starts_with("/dev/") {
            return None;
        }
        Some(usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?)
    })
}

struct Toucher {
    page_size: usize,
    pagemap: File,
    /// One `pagemap` entry (8 bytes) per page of the chunk being looked at.
    entries: Vec<u8>,
    /// Pages to read with the next `process_vm_readv`.
    pending: Vec<RemoteIoVec>,
    sink: [u8; PAGES_PER_CALL],
    pages_read: usize,
}

impl Toucher {
    fn new() -> io::Result<Toucher> {
        Ok(Toucher {
            page_size: rustix::param::page_size(),
            pagemap: File::open("/proc/self/pagemap")?,
            entries: vec![0; PAGES_PER_PAGEMAP_READ * 8],
            pending: Vec::with_capacity(PAGES_PER_CALL),
            sink: [0; PAGES_PER_CALL],
            pages_read: 0,
        })
    }

    fn touch(&mut self, range: Range<usize>) -> io::Result<()> {
        let mut chunk_start = range.start;
        while chunk_start < range.end {
            let pages = (range.end - chunk_start)
                .div_ceil(self.page_size)
                .min(PAGES_PER_PAGEMAP_READ);
            let entries = &mut self.entries[..pages * 8];
            let offset = (chunk_start / self.page_size * 8) as u64;
            // A mapping gone since `maps` was read reads as absent pages or fails: skipped.
            if self.pagemap.read_exact_at(entries, offset).is_ok() {
                let resident: Vec<usize> = entries
                    .chunks_exact(8)
                    .enumerate()
                    .filter(|(_, entry)| {
                        u64::from_le_bytes((*entry).try_into().expect("8 bytes")) & PRESENT != 0
                    })
                    .map(|(index, _)| chunk_start + index * self.page_size)
                    .collect();
                for address in resident {
                    self.pending.push(RemoteIoVec {
                        base: address,
                        len: 1,
                    });
                    if self.pending.len() == PAGES_PER_CALL {
                        self.flush()?;
                    }
                }
            }
            chunk_start += pages * self.page_size;
        }
        Ok(())
    }

    /// Reads the pending pages. The call stops at the first page it cannot read (unmapped since
    /// it was listed, or a file page that can no longer be read): that page is skipped and the
    /// rest read. Only a refusal of the call itself (a sandbox that forbids it) ends warming.
    fn flush(&mut self) -> io::Result<()> {
        let mut done = 0;
        while done < self.pending.len() {
            let remote = &self.pending[done..];
            let mut local = [IoSliceMut::new(&mut self.sink[..remote.len()])];
            match process_vm_readv(Pid::this(), &mut local, remote) {
                Ok(0) => done += 1,
                Ok(read) => {
                    self.pages_read += read;
                    done += read;
                }
                Err(errno @ (Errno::EPERM | Errno::ENOSYS)) => return Err(errno.into()),
                Err(_) => done += 1,
            }
        }
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_readable_mappings_other_than_the_kernels_and_devices_are_warmed() {
        let maps = "\
55d0c0000000-55d0c0002000 r--p 00000000 fd:01 123 /usr/bin/recsys
55d0c0002000-55d0c0004000 r-xp 00002000 fd:01 123 /usr/bin/recsys
7f0000000000-7f0000001000 ---p 00000000 00:00 0
7f0000001000-7f0000003000 rw-p 00000000 00:00 0
7f1000000000-7f1000010000 r--s 00000000 fd:01 456 /data/index/vectors.mmap
7f2000000000-7f2000001000 rw-s 00000000 00:05 789 /dev/zero (deleted)
7ffd00000000-7ffd00002000 r--p 00000000 00:00 0 [vvar]
7ffd00002000-7ffd00003000 r-xp 00000000 00:00 0 [vdso]
7ffd10000000-7ffd10001000 rw-p 00000000 00:00 0 [stack]
";
        let ranges: Vec<Range<usize>> = readable_ranges(maps).collect();
        assert_eq!(
            ranges,
            vec![
                0x55d0c0000000..0x55d0c0002000,
                0x55d0c0002000..0x55d0c0004000,
                0x7f0000001000..0x7f0000003000,
                0x7f1000000000..0x7f1000010000,
                0x7ffd10000000..0x7ffd10001000,
            ]
        );
    }

    #[test]
    fn a_pass_reads_the_resident_pages_and_leaves_the_others_out() {
        let page = rustix::param::page_size();
        let before = touch_resident_pages().unwrap();
        // 4,096 pages touched: resident, so the next pass reads them too.
        let touched = vec![1u8; 4096 * page];
        let with_touched = touch_resident_pages().unwrap();
        // 4,096 pages reserved but never touched: not resident, so not read (and still not
        // resident after the pass).
        let untouched: Vec<u8> = Vec::with_capacity(4096 * page);
        let with_untouched = touch_resident_pages().unwrap();
        assert!(
            with_touched >= before + 4000,
            "{before} pages, then {with_touched} with 4,096 more touched"
        );
        assert!(
            with_untouched < with_touched + 1000,
            "{with_touched} pages, then {with_untouched} with 4,096 untouched pages reserved"
        );
        drop((touched, untouched));
    }

    #[test]
    fn a_page_unmapped_since_it_was_listed_is_skipped_and_the_rest_read() {
        let page = rustix::param::page_size();
        let memory = vec![1u8; 3 * page];
        let mut toucher = Toucher::new().unwrap();
        let at = |address: usize| RemoteIoVec {
            base: address,
            len: 1,
        };
        let start = memory.as_ptr() as usize;
        // Address 0 is never mapped.
        toucher.pending = vec![
            at(start),
            at(0),
            at(start + page),
            at(0),
            at(start + 2 * page),
        ];
        toucher.flush().unwrap();
        assert_eq!(toucher.pages_read, 3);
        assert!(toucher.pending.is_empty());
    }
}
