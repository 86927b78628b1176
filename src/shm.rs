//! Fixed-size shared memory between the processes of one sluice instance: the supervisor makes a
//! region (a memfd, inheritable) before it starts the workers; each worker maps it from the
//! descriptor it inherits, so a worker restarted later joins the same region. A single process
//! maps an anonymous region of the same layout. What lives in a region is only ever touched
//! through atomics (see [`crate::auth::guard`], [`crate::backend::board`],
//! [`crate::backend::budget`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU64;

/// A mapping of `size` bytes, unmapped on drop.
pub struct Region {
    base: *mut u8,
    size: usize,
}

// SAFETY: the region is a fixed mapping that lives as long as the `Region`; its users access its
// contents only through atomics.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base` is the start of a mapping of `size` bytes made by `map`.
        unsafe { libc::munmap(self.base.cast(), self.size) };
    }
}

fn map(fd: RawFd, size: usize, flags: libc::c_int) -> std::io::Result<*mut u8> {
    // SAFETY: a fresh shared mapping; the kernel checks the descriptor.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | flags,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p.cast())
}

impl Region {
    /// A zeroed region for this process alone.
    pub fn private(size: usize) -> std::io::Result<Region> {
        Ok(Region {
            base: map(-1, size, libc::MAP_ANONYMOUS)?,
            size,
        })
    }

    /// A zeroed region to share with worker processes: its memfd (named `name`) is inheritable
    /// (no close-on-exec), so children started afterwards can [`attach`](Self::attach) to it.
    pub fn create_shared(name: &std::ffi::CStr, size: usize) -> std::io::Result<(Region, OwnedFd)> {
        // SAFETY: a C string; flags 0 = inheritable.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on our own memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let base = map(fd.as_raw_fd(), size, 0)?;
        Ok((Region { base, size }, fd))
    }

    /// Maps a region the supervisor created, from the descriptor this process inherited (and
    /// closes that descriptor: the mapping keeps the memory). `what` names it in errors.
    pub fn attach(fd: RawFd, size: usize, what: &str) -> Result<Region, String> {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(format!("{what} fd {fd}: not an open descriptor"));
        }
        // SAFETY: an open descriptor given to this process to own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: fstat into a zeroed struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(format!("{what} fd: {}", std::io::Error::last_os_error()));
        }
        if st.st_size as usize != size {
            return Err(format!("{what} fd: {} bytes, expected {size}", st.st_size));
        }
        let base = map(fd.as_raw_fd(), size, 0).map_err(|e| format!("{what} fd: {e}"))?;
        Ok(Region { base, size })
    }

    /// The `i`-th 8-byte word of the region.
    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!((i + 1) * 8 <= self.size, "word {i} outside the region");
        // SAFETY: within the mapping (checked above), 8-byte aligned (mappings are page
        // aligned); the region is only ever accessed atomically.
        unsafe { &*(self.base.add(i * 8) as *const AtomicU64) }
    }

    /// `n` words from word `first` on.
    pub fn words(&self, first: usize, n: usize) -> &[AtomicU64] {
        assert!((first + n) * 8 <= self.size, "words outside the region");
        // SAFETY: as for `word`.
        unsafe { std::slice::from_raw_parts(self.base.add(first * 8) as *const AtomicU64, n) }
    }
}
