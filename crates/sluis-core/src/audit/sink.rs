//! Where decision log lines go: stdout, or a file rotated by size.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Takes finished lines, one at a time, on the writer thread.
pub trait Sink: Send {
    /// Writes one line; the sink adds the newline.
    fn write_line(&mut self, line: &str) -> io::Result<()>;
    /// Called when the queue is empty: make what was written visible.
    fn flush(&mut self) -> io::Result<()>;
}

/// Standard output, beside the service's own log lines.
pub struct Stdout;

impl Sink for Stdout {
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        // One write of the whole line under the lock, so a tracing line never lands in
        // the middle of it.
        let mut out = io::stdout().lock();
        out.write_all(format!("{line}\n").as_bytes())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

/// A file that is renamed to `FILE.1` (and older ones shifted up to `FILE.N`) when the
/// next line would take it past `max_size`.
pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    max_files: usize,
    file: BufWriter<File>,
    size: u64,
}

impl RotatingFile {
    /// Opens `path` for appending, creating it (and not its directory) when missing.
    pub fn open(path: &Path, max_size: u64, max_files: usize) -> io::Result<RotatingFile> {
        let file = open_append(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open `{}`: {e}", path.display()))
        })?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            max_size,
            max_files,
            file: BufWriter::new(file),
            size,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.max_files == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.max_files).rev() {
                match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = BufWriter::new(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

impl Sink for RotatingFile {
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        let length = line.len() as u64 + 1;
        if self.size > 0 && self.size + length > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += length;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// `FILE.n`.
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    // Decision logs hold personal data even when masked: not world-readable.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    options.open(path)
}

/// The last line written to the log at `path` (or, when that file is empty, to the newest
/// rotated file), so a restarted chain continues where it stopped.
pub fn last_line(path: &Path, max_files: usize) -> Result<Option<String>, String> {
    let candidates =
        std::iter::once(path.to_owned()).chain((1..=max_files).map(|n| rotated(path, n)));
    for candidate in candidates {
        match tail(&candidate) {
            Ok(text) => {
                if let Some(line) = text.lines().rev().find(|l| !l.is_empty()) {
                    return Ok(Some(line.to_owned()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read `{}`: {e}", candidate.display())),
        }
    }
    Ok(None)
}

/// The end of a file: enough to hold its last line (lines are a few KiB at most) without
/// reading a 100 MiB log at every start.
fn tail(path: &Path) -> io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 1024 * 1024;
    let mut file = File::open(path)?;
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(TAIL)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
