//! Replacing a file whole: written beside it and renamed over it once
//! complete, so that a crash or a full disk never leaves half a file under
//! its name.

use std::fs::File;
use std::path::Path;

use super::CandleError;

/// Writes `path` through `write`, which is handed a new file beside it
/// (`.NAME.partial`) and hands it back complete; then renames that over
/// `path`. Only a regular file is replaced (never a device, a directory or
/// a pipe: the name may be /dev/null); a link is written through (its
/// target is the file replaced); a file replaced keeps who may read it.
pub(super) fn replace_file(
    path: &Path,
    write: impl FnOnce(File) -> std::io::Result<File>,
) -> Result<(), CandleError> {
    let name = path.display().to_string();
    let refused = |why: &str| CandleError::Write {
        path: name.clone(),
        error: std::io::Error::other(why.to_owned()),
    };
    let existing = std::fs::metadata(path).ok();
    if existing.as_ref().is_some_and(|m| !m.is_file()) {
        return Err(refused("not a regular file"));
    }
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let target = if is_link {
        std::fs::canonicalize(path).map_err(|error| CandleError::Write {
            path: name.clone(),
            error,
        })?
    } else {
        path.to_path_buf()
    };
    let file_name = target.file_name().map(|n| n.to_string_lossy().into_owned());
    let partial = target.with_file_name(format!(".{}.partial", file_name.unwrap_or_default()));
    let written = (|| {
        let file = File::create(&partial)?;
        if let Some(m) = &existing {
            file.set_permissions(m.permissions())?;
        }
        write(file)?.sync_all()?;
        std::fs::rename(&partial, &target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written.map_err(|error| CandleError::Write { path: name, error })
}
