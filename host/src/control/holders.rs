//! Who is behind a database's lock and a control file's port, as the
//! kernel tells it (`/proc`): what the control client checks before it asks
//! a run anything or shows it the token.

use std::path::Path;

use super::{control_file, endpoint_in, read_regular};

/// Who holds `db`'s lock, as the kernel says: `None` where its table of
/// locks cannot be read, `Some(None)` when no live process holds it.
///
/// A run holds two: its lock file's and the database file's own (the lock
/// file may have been removed or replaced while it runs; the database
/// cannot be). The pids the lock file and the control file name are asked
/// first, of their own descriptors (`/proc/PID/fdinfo` of one open on
/// either file lists its locks, read whole). `/proc/locks`, which names
/// every holder, is read a page at a time, each read starting again by
/// position: while other processes lock and unlock, a line moves and is
/// skipped, so it is searched only where neither named pid holds either
/// file (a run starting, before it names itself). That table names a
/// lock's file by inode number alone (a snapshot of a filesystem repeats
/// them) and keeps the pid that took it after that process has ended (a
/// child it forked may hold it a moment longer): a pid found there counts
/// only if the file itself is among its open files.
pub(super) fn lock_held_by(db: &Path) -> Option<Option<u32>> {
    use std::os::unix::fs::MetadataExt;
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    let path = crate::store::lock_file(db);
    let files: Vec<(u64, u64)> = [std::fs::symlink_metadata(&path), std::fs::metadata(db)]
        .into_iter()
        .filter_map(|m| m.ok().filter(|m| m.is_file()).map(|m| (m.dev(), m.ino())))
        .collect();
    let named = read_regular(&path, 256)
        .ok()
        .and_then(|text| crate::store::parse_owner(&String::from_utf8_lossy(&text)))
        .map(|(pid, _)| pid);
    let serving = endpoint_in(&control_file(db)).map(|endpoint| endpoint.pid);
    if let Some(pid) = [named, serving]
        .into_iter()
        .flatten()
        .find(|&pid| holds_flock(pid, &files) == Some(true))
    {
        return Some(Some(pid));
    }
    let holder = files.iter().find_map(|&(dev, ino)| {
        exclusive_flocks_on(&table, ino)
            .into_iter()
            .find(|&pid| has_open(pid, dev, ino))
    });
    Some(holder)
}

/// Whether process `pid` holds an exclusive `flock` on one of `files`
/// (device, inode) through a descriptor of its own; `None` where its
/// descriptors cannot be read (another user's process, or no `/proc`).
fn holds_flock(pid: u32, files: &[(u64, u64)]) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.filter_map(Result::ok).any(|fd| {
        let Some(ino) = std::fs::metadata(fd.path())
            .ok()
            .filter(|m| files.contains(&(m.dev(), m.ino())))
            .map(|m| m.ino())
        else {
            return false;
        };
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        read_regular(Path::new(&info), 64 << 10).is_ok_and(|info| {
            let locks = String::from_utf8_lossy(&info).replace("lock:", "");
            !exclusive_flocks_on(&locks, ino).is_empty()
        })
    }))
}

/// Whether process `pid` has the file (`dev`, `ino`) open; where its open
/// files cannot be read (another user's), whether it is alive.
fn has_open(pid: u32, dev: u64, ino: u64) -> bool {
    match open_files(pid) {
        Ok(files) => files.contains(&(dev, ino)),
        Err(_) => crate::store::alive(pid),
    }
}

/// The (device, inode) of every file process `pid` has open, sockets
/// among them (a socket's inode is the one `/proc/net/tcp` names).
fn open_files(pid: u32) -> std::io::Result<std::collections::HashSet<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?;
    Ok(fds
        .filter_map(|fd| std::fs::metadata(fd.ok()?.path()).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect())
}

/// The pids holding an exclusive `flock` on inode `inode` in a
/// `/proc/locks` table (waiters, shown after `->`, hold nothing).
fn exclusive_flocks_on(table: &str, inode: u64) -> Vec<u32> {
    table
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [_, "FLOCK", _, "WRITE", pid, file, ..] = f.as_slice() else {
                return None;
            };
            let on: u64 = file.rsplit(':').next()?.parse().ok()?;
            (on == inode).then(|| pid.parse().ok()).flatten()
        })
        .collect()
}

/// Why the socket listening on `port` where 127.0.0.1 reaches it is not
/// process `pid`'s, if it is not. A control file's port is asked only
/// while its run holds it: after a crash, or a reboot that handed the run's
/// pid to another process, whoever listens there would be shown the token
/// (and could answer a kill). Nothing is said where this cannot be told (no
/// `/proc`), nor when nothing listens (the connection fails as it would).
pub(super) fn port_not_held_by(pid: u32, port: u16) -> Option<String> {
    let mut listeners = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            listeners.extend(listening_on(&text, port));
        }
    }
    if listeners.is_empty() {
        return None;
    }
    let files = match open_files(pid) {
        Ok(files) => files,
        Err(e) => return Some(format!("the descriptors of pid {pid} cannot be read ({e})")),
    };
    let inodes = files.into_iter().map(|(_, ino)| ino).collect();
    let uid = foreign_listener(&listeners, &inodes)?;
    Some(format!(
        "another process (uid {uid}) listens there, not pid {pid}"
    ))
}

/// The uid of a listener a connection to 127.0.0.1 may reach that is not
/// among `sockets`: none when one of `sockets` listens on 127.0.0.1 itself
/// (Linux hands a connection to the exact address before any wildcard, and
/// a wildcard socket of IPv6 only, which the tables cannot tell apart,
/// never gets it).
fn foreign_listener(
    listeners: &[Listener],
    sockets: &std::collections::HashSet<u64>,
) -> Option<String> {
    let ours = |l: &&Listener| sockets.contains(&l.inode);
    if listeners.iter().filter(|l| l.loopback).any(|l| ours(&l)) {
        return None;
    }
    listeners.iter().find(|l| !ours(l)).map(|l| l.uid.clone())
}

/// A listening socket from a `/proc/net/tcp` or `tcp6` table.
#[derive(Debug, Clone, PartialEq)]
struct Listener {
    inode: u64,
    uid: String,
    /// On 127.0.0.1 itself (not a wildcard).
    loopback: bool,
}

/// The sockets of a `/proc/net/tcp` or `tcp6` table that listen on
/// `port` at an address a connection to 127.0.0.1 reaches: loopback
/// itself, or a wildcard (IPv4's, IPv6's, or IPv6's for IPv4 only).
fn listening_on(table: &str, port: u16) -> Vec<Listener> {
    const LOOPBACK: [&str; 2] = ["0100007F", "0000000000000000FFFF00000100007F"];
    const WILDCARDS: [&str; 3] = [
        "00000000",
        "00000000000000000000000000000000",
        "0000000000000000FFFF000000000000",
    ];
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, uid, inode) = (f.get(1)?, f.get(3)?, f.get(7)?, f.get(9)?);
            let address = local.strip_suffix(port.as_str())?;
            let inode = inode.parse().ok()?;
            let loopback = LOOPBACK.contains(&address);
            (*state == "0A" && (loopback || WILDCARDS.contains(&address))).then(|| Listener {
                inode,
                uid: (*uid).to_owned(),
                loopback,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listeners_a_loopback_connection_reaches_are_read_from_the_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0
   2: 0200007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4545 1 0000000000000000 100 0 0 10 0
   4: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4646 1 0000000000000000 100 0 0 10 0
";
        let listener = |inode: u64, uid: &str, loopback| Listener {
            inode,
            uid: uid.to_owned(),
            loopback,
        };
        // Loopback and any address; not 127.0.0.2, a connection, another port.
        assert_eq!(
            listening_on(v4, 8080),
            [listener(4242, "1000", true), listener(4343, "0", false)]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 5151 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 5252 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1002        0 5353 1 0000000000000000 100 0 0 10 0
   3: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1003        0 5454 1 0000000000000000 100 0 0 10 0
";
        // Any address, IPv4's any as IPv6 says it, IPv4's loopback; not ::1.
        assert_eq!(
            listening_on(v6, 8080),
            [
                listener(5151, "1001", false),
                listener(5353, "1002", false),
                listener(5454, "1003", true)
            ]
        );

        // A connection to 127.0.0.1 goes to a socket on that address before
        // any wildcard (one of IPv6 only, which the tables do not tell
        // apart, never gets it): the engine's own listener there is enough.
        let ours: std::collections::HashSet<u64> = [4242].into();
        let wild = listener(5151, "1001", false);
        let engines = listener(4242, "1000", true);
        assert_eq!(
            foreign_listener(&[wild.clone(), engines.clone()], &ours),
            None
        );
        assert_eq!(foreign_listener(&[engines], &ours), None);
        assert_eq!(
            foreign_listener(std::slice::from_ref(&wild), &ours),
            Some("1001".to_owned())
        );
        let strangers = listener(4444, "0", true);
        assert_eq!(
            foreign_listener(&[strangers, wild], &ours),
            Some("0".to_owned())
        );
        assert!(listening_on("garbage\n\n 0: x", 8080).is_empty());
    }

    #[test]
    fn the_holder_of_an_exclusive_flock_is_read_from_the_kernels_table() {
        let table = "1: FLOCK  ADVISORY  WRITE 18372 fe:00:10010753 0 EOF
2: FLOCK  ADVISORY  READ 14620 fe:00:10133507 0 EOF
2: -> FLOCK  ADVISORY  WRITE 14700 fe:00:10133507 0 EOF
3: POSIX  ADVISORY  WRITE 14621 fe:00:777 0 EOF
";
        assert_eq!(exclusive_flocks_on(table, 10010753), [18372]);
        // Shared, waiting, a POSIX lock, no lock: none holds it.
        assert!(exclusive_flocks_on(table, 10133507).is_empty());
        assert!(exclusive_flocks_on(table, 777).is_empty());
        assert!(exclusive_flocks_on(table, 1).is_empty());
        assert!(exclusive_flocks_on("garbage\n1: FLOCK", 1).is_empty());
        // The same inode number on two filesystems: both named.
        let twice = "1: FLOCK  ADVISORY  WRITE 10 fe:00:99 0 EOF\n2: FLOCK  ADVISORY  WRITE 20 fe:01:99 0 EOF";
        assert_eq!(exclusive_flocks_on(twice, 99), [10, 20]);

        // A lock this process holds is read back as its own.
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("keel.db");
        assert_eq!(lock_held_by(&db), Some(None));
        let file = std::fs::File::create(crate::store::lock_file(&db)).expect("lock file");
        assert_eq!(lock_held_by(&db), Some(None));
        file.try_lock().expect("lock");
        assert_eq!(lock_held_by(&db), Some(Some(std::process::id())));
        // (A test elsewhere in this binary forks, and its child may hold a
        // copy of the lock a moment longer: not this process, nor a run.)
        drop(file);
        assert_eq!(lock_held_by(&db), Some(None));

        // A holder counts only with the lock file among its open files, by
        // device and inode: an open file is found, another inode is not,
        // nor a process that does not exist.
        use std::os::unix::fs::MetadataExt;
        let lock = std::fs::metadata(crate::store::lock_file(&db)).expect("lock");
        let other = std::fs::File::create(dir.path().join("other")).expect("other");
        let other_ino = other.metadata().expect("other").ino();
        assert!(!has_open(
            std::process::id(),
            lock.dev(),
            other_ino ^ 1 << 40
        ));
        assert!(has_open(std::process::id(), lock.dev(), other_ino));
        assert!(!has_open(u32::MAX, lock.dev(), other_ino));
    }

    /// `/proc/locks` is read a page at a time and each read starts again
    /// by position: as other processes lock and unlock, a line moves and
    /// is skipped. A run's lock must be seen whatever the machine locks
    /// meanwhile (once it was not, `keel kill` said no run held it).
    #[test]
    fn a_held_lock_is_seen_while_other_files_are_locked_and_unlocked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("keel.db");
        let held = crate::store::Ownership::claim(&db, "keel run").expect("claim");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn: Vec<_> = (0..3)
            .map(|t| {
                let files: Vec<_> = (0..40)
                    .map(|i| std::fs::File::create(dir.path().join(format!("churn-{t}-{i}"))))
                    .collect::<Result<_, _>>()
                    .expect("churn files");
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        files.iter().for_each(|f| f.lock().expect("churn lock"));
                        files.iter().for_each(|f| f.unlock().expect("churn unlock"));
                    }
                })
            })
            .collect();
        let me = std::process::id();
        let missed = (0..300)
            .filter(|_| lock_held_by(&db) != Some(Some(me)))
            .count();
        assert_eq!(missed, 0, "the held lock was missed {missed} times in 300");
        // Its lock file emptied, or removed: the control file names the
        // run, which holds the database's own lock.
        let control = format!(r#"{{"port":1,"token":"t","pid":{me}}}"#);
        std::fs::write(control_file(&db), control).expect("control file");
        std::fs::write(crate::store::lock_file(&db), "").expect("empty the lock file");
        let emptied = (0..300)
            .filter(|_| lock_held_by(&db) != Some(Some(me)))
            .count();
        std::fs::remove_file(crate::store::lock_file(&db)).expect("remove the lock file");
        let removed = (0..300)
            .filter(|_| lock_held_by(&db) != Some(Some(me)))
            .count();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.into_iter().for_each(|t| t.join().expect("churn"));
        assert_eq!(
            (emptied, removed),
            (0, 0),
            "missed with the lock file emptied, removed"
        );
        std::fs::write(crate::store::lock_file(&db), format!("{me} keel run")).expect("lock file");
        // Let go, the lock file still names this process: it holds nothing.
        drop(held);
        assert_eq!(lock_held_by(&db), Some(None));
        let lock = std::fs::metadata(crate::store::lock_file(&db)).expect("lock");
        use std::os::unix::fs::MetadataExt;
        let files = [(lock.dev(), lock.ino())];
        assert_eq!(holds_flock(std::process::id(), &files), Some(false));
        assert_eq!(holds_flock(u32::MAX, &files), None);
    }

    #[test]
    fn a_port_held_here_is_not_another_pids() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(port_not_held_by(std::process::id(), port), None);
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let said = port_not_held_by(other.id(), port);
        let _ = other.kill();
        let _ = other.wait();
        let said = said.expect("another pid's port");
        assert!(said.contains("another process"), "{said}");
        drop(listener);
        assert_eq!(port_not_held_by(std::process::id(), port), None);
    }
}
