//! The shard snapshot file: the shard's descriptor and its key range as SST files, in one
//! stream that openraft can send to another replica.
//!
//! Layout: the magic `HNSNAP01`, a big-endian u64 header length, the postcard-encoded
//! [`SnapshotHeader`], then the bytes of each SST file in the order the header lists them.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use hanse_storage::{ShardDescriptor, Store, codec};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"HNSNAP01";
/// SST files of a snapshot are cut at this size so none needs to fit in memory at once.
const SST_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHeader {
    descriptor: ShardDescriptor,
    /// Size of each SST file that follows, in order.
    sst_sizes: Vec<u64>,
}

/// Exports `descriptor`'s key range into the snapshot file `path` (written atomically).
pub(crate) fn write(
    store: &dyn Store,
    descriptor: &ShardDescriptor,
    path: &Path,
) -> io::Result<()> {
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
pub(crate) fn unpack(path: &Path, staging: &Path) -> io::Result<(ShardDescriptor, Vec<PathBuf>)> {
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
