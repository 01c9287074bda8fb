//! The shard snapshot file: the shard's descriptor and its key range as SST files, in one
//! stream that openraft can send to another replica.
//!
//! Layout: the magic `HNSNAP01`, a big-endian u64 header length, the postcard-encoded
//! [`SnapshotHeader`], then the bytes of each SST file in the order the header lists them.

use crate::knobs::{SNAPSHOT_SST_FILES_MAX, SST_FILE_BYTES_MAX};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use hanse_shard::ShardDescriptor;
use hanse_storage::{Store, codec};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"HNSNAP01";

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHeader {
    descriptor: ShardDescriptor,
    /// Size of each SST file that follows, in order.
    sst_sizes: Vec<u64>,
}

/// Exports `descriptor`'s key range into the snapshot file `path` (written atomically),
/// from one consistent view of the data. Backups are such files too.
pub fn write(store: &dyn Store, descriptor: &ShardDescriptor, path: &Path) -> io::Result<()> {
    let dir = path.parent().expect("snapshot files live in a directory");
    fs::create_dir_all(dir)?;
    let staging = tempfile::tempdir_in(dir)?;
    let export = store
        .export_range(
            &descriptor.start,
            &descriptor.end,
            staging.path(),
            SST_FILE_BYTES_MAX,
        )
        .map_err(io::Error::other)?;
    let sst_sizes = export
        .files
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len()))
        .collect::<io::Result<Vec<_>>>()?;
    let header = codec::encode(&SnapshotHeader {
        descriptor: descriptor.clone(),
        sst_sizes,
    });
    let tmp = path.with_extension("tmp");
    let mut out = BufWriter::new(File::create(&tmp)?);
    out.write_all(MAGIC)?;
    out.write_all(&(header.len() as u64).to_be_bytes())?;
    out.write_all(&header)?;
    for file in &export.files {
        io::copy(&mut File::open(file)?, &mut out)?;
    }
    out.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()?;
    fs::rename(&tmp, path)
}

/// Reads the snapshot file `path`, writes its SST files into `staging` and returns the
/// descriptor it was taken from with the SST paths.
pub fn unpack(path: &Path, staging: &Path) -> io::Result<(ShardDescriptor, Vec<PathBuf>)> {
    let mut input = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a Hanse shard snapshot",
        ));
    }
    let mut len = [0u8; 8];
    input.read_exact(&mut len)?;
    let header_len = usize::try_from(u64::from_be_bytes(len))
        .ok()
        .filter(|&n| n <= 16 * 1024 * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "snapshot header too large"))?;
    let mut header = vec![0u8; header_len];
    input.read_exact(&mut header)?;
    let header: SnapshotHeader =
        codec::decode("snapshot header", &header).map_err(io::Error::other)?;
    if header.sst_sizes.len() > SNAPSHOT_SST_FILES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the snapshot lists {} files, over the limit of {SNAPSHOT_SST_FILES_MAX}",
                header.sst_sizes.len()
            ),
        ));
    }
    let mut files = Vec::with_capacity(header.sst_sizes.len());
    for (i, size) in header.sst_sizes.iter().enumerate() {
        let file = staging.join(format!("{i:06}.sst"));
        let copied = io::copy(&mut (&mut input).take(*size), &mut File::create(&file)?)?;
        if copied != *size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "snapshot file is truncated",
            ));
        }
        files.push(file);
    }
    Ok((header.descriptor, files))
}

/// A snapshot file as openraft streams it (the group's `SnapshotData`). Reads, writes and
/// seeks go straight to the file on the calling thread, as every other storage call of a
/// group does: chunks are local and bounded, and without a hop to tokio's blocking pool
/// the order of events never depends on another thread (the deterministic simulation
/// relies on that).
#[derive(Debug)]
pub struct SnapshotFile(File);

impl SnapshotFile {
    pub fn open(path: &Path) -> io::Result<SnapshotFile> {
        File::open(path).map(SnapshotFile)
    }

    pub fn create(path: &Path) -> io::Result<SnapshotFile> {
        File::create(path).map(SnapshotFile)
    }

    pub fn from_std(file: File) -> SnapshotFile {
        SnapshotFile(file)
    }

    pub fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl tokio::io::AsyncRead for SnapshotFile {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let read = self.get_mut().0.read(buf.initialize_unfilled());
        std::task::Poll::Ready(read.map(|n| buf.advance(n)))
    }
}

impl tokio::io::AsyncWrite for SnapshotFile {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Ready(self.get_mut().0.write(buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(self.get_mut().0.flush())
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl tokio::io::AsyncSeek for SnapshotFile {
    fn start_seek(self: std::pin::Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        self.get_mut().0.seek(position).map(|_| ())
    }

    fn poll_complete(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<u64>> {
        std::task::Poll::Ready(self.get_mut().0.stream_position())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_snapshot_file_reads_back_what_was_written_after_a_seek() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = SnapshotFile::from_std(tempfile::tempfile_in(dir.path()).unwrap());
        file.write_all(b"hanse snapshot").await.unwrap();
        assert_eq!(file.seek(io::SeekFrom::Start(6)).await.unwrap(), 6);
        let mut rest = String::new();
        file.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "snapshot");
    }
}
