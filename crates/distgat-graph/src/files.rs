//! Reading whole input files that must be regular files.

use std::io::{Error, ErrorKind, Read};
use std::path::Path;

/// Reads the whole file at `path` (symlinks followed), refusing anything that is not a
/// regular file: a directory, a FIFO, or a device such as `/dev/zero` would otherwise be
/// read without end or block forever.
///
/// Errors: the open or read error, or `ErrorKind::InvalidInput` "is not a regular file".
/// The caller names the path.
pub fn read_regular_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if let Some(what) = irregular_kind(&meta) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("is not a regular file ({what})"),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What a file that is not a regular file is, for the "is not a regular file (...)"
/// errors; `None` for a regular file.
pub(crate) fn irregular_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    if meta.is_file() {
        None
    } else if meta.is_dir() {
        Some("a directory")
    } else {
        Some("a device, FIFO or socket")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_directories_are_refused() {
        for (path, what) in [
            ("/dev/zero", "(a device, FIFO or socket)"),
            ("/", "(a directory)"),
        ] {
            if Path::new(path).exists() {
                let err = read_regular_file(Path::new(path)).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidInput, "{path}");
                assert!(err.to_string().contains("not a regular file"), "{err}");
                // .npy inputs (read by position) say the same.
                let err = crate::NpyBody::open(Path::new(path))
                    .err()
                    .unwrap()
                    .to_string();
                assert!(err.contains(&format!("not a regular file {what}")), "{err}");
            }
        }
        let dir = std::env::temp_dir().join(format!("distgat-files-{}", std::process::id()));
        std::fs::write(&dir, b"abc").unwrap();
        assert_eq!(read_regular_file(&dir).unwrap(), b"abc");
        std::fs::remove_file(&dir).unwrap();
    }
}
