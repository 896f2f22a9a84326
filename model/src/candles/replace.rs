//! Replacing a file whole: written beside it and renamed over it once
//! complete, so that a crash or a full disk never leaves half a file under
//! its name.

use std::fs::File;
use std::path::Path;

use super::CandleError;

/// Writes `path` through `write`, which is handed a new file beside it
/// (`.NAME.PID-N.partial`, its own: two writers of one file at once each
/// write theirs, and the last renamed wins whole) and hands it back
/// complete; then renames that over `path`. Only a regular file is replaced (never a device, a directory or
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
    let file_name = partial_stem(&file_name.unwrap_or_default());
    remove_left_over(&target, &file_name);
    let (partial, file) = match new_partial(&target, &file_name) {
        Ok(made) => made,
        // The file is written beside its name: what the directory refuses
        // is said of the directory.
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            let dir = match target.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.display().to_string(),
                _ => ".".to_owned(),
            };
            return Err(CandleError::Write {
                path: name,
                error: std::io::Error::new(
                    error.kind(),
                    format!(
                        "cannot create a file in {dir} ({error}): a file is written beside its name, then renamed over it"
                    ),
                ),
            });
        }
        Err(error) => return Err(CandleError::Write { path: name, error }),
    };
    let written = (|| {
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

/// What a partial file's name starts with: the file's name, cut so that
/// the partial file's name (`.STEM.PID-N.partial`) stays within the 255
/// bytes a file name may have.
fn partial_stem(file_name: &str) -> String {
    const MOST: usize = 255 - ".".len() - ".4294967295-18446744073709551615.partial".len();
    let mut end = file_name.len().min(MOST);
    while !file_name.is_char_boundary(end) {
        end -= 1;
    }
    file_name[..end].to_owned()
}

/// A new file beside `target` for this writer alone: created, never
/// opened if something is there (a link planted there is not followed).
fn new_partial(target: &Path, file_name: &str) -> std::io::Result<(std::path::PathBuf, File)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let pid = std::process::id();
    let mut tries = 0;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let partial = target.with_file_name(format!(".{file_name}.{pid}-{n}.partial"));
        match File::options().write(true).create_new(true).open(&partial) {
            Ok(file) => return Ok((partial, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Removes the partial files of `target` that writers which have ended
/// (killed mid-write) left beside it. Where it cannot be told whether a
/// writer is alive (no `/proc`), they stay.
fn remove_left_over(target: &Path, file_name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{file_name}.");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(writer) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.strip_suffix(".partial"))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u64>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        let ended = !Path::new(&format!("/proc/{writer}")).exists();
        if ended && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
