//! keepalived's script security (`enable_script_security`), always on: a command is run
//! only if nobody but root (or the user it runs as) could have changed it. The program
//! is found as `execvp` would find it, then the file and every directory above it
//! (symlinks resolved) must be owned by root or that user and not writable by others
//! (a sticky directory such as /tmp is fine: only an entry's owner may replace it).
//! A command that cannot be found on `PATH` is refused as keepalived refuses it; a
//! missing path is left to fail when it is run.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Why a command may not run: a sentence naming the path.
pub type Unsafe = String;

/// The program `argv0` names, if it is safe to run as `uid`.
pub fn check(argv0: &str, uid: u32) -> Result<PathBuf, Unsafe> {
    judge(argv0, Some(uid))
}

/// [`check`] without knowing whom it will run as (a configuration being validated):
/// any owner passes, writability by others does not.
pub fn check_writable(argv0: &str) -> Result<PathBuf, Unsafe> {
    judge(argv0, None)
}

fn judge(argv0: &str, uid: Option<u32>) -> Result<PathBuf, Unsafe> {
    let program = find(argv0)?;
    let real = match program.canonicalize() {
        Ok(real) => real,
        // Nothing to judge: running it fails and says so.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(program),
        Err(e) => return Err(format!("cannot resolve script {}: {e}", program.display())),
    };
    let mut at: Option<&Path> = Some(&real);
    while let Some(path) = at {
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
        let owner_ok = uid.is_none_or(|uid| meta.uid() == 0 || meta.uid() == uid);
        let sticky_dir = meta.is_dir() && meta.mode() & 0o1000 != 0;
        let group_writable = meta.mode() & 0o020 != 0 && meta.gid() != 0;
        let other_writable = meta.mode() & 0o002 != 0;
        if !owner_ok {
            return Err(unsafe_because(
                &real,
                path,
                format!("owned by uid {}", meta.uid()),
            ));
        }
        if (group_writable || other_writable) && !sticky_dir {
            let who = if other_writable {
                "anyone".to_owned()
            } else {
                format!("group {}", meta.gid())
            };
            return Err(unsafe_because(&real, path, format!("writable by {who}")));
        }
        at = path.parent();
    }
    Ok(real)
}

fn unsafe_because(script: &Path, path: &Path, why: String) -> Unsafe {
    let place = if path == script {
        String::new()
    } else {
        format!(" (its directory {})", path.display())
    };
    format!(
        "unsafe permissions found for script {}{place}: {why}; only root (or the user it \
         runs as) may be able to change a script run by xdp-lb",
        script.display()
    )
}

/// `argv0` as a path: as given when it has a `/`, else the first executable of that
/// name on `PATH`.
fn find(argv0: &str) -> Result<PathBuf, Unsafe> {
    if argv0.contains('/') {
        return Ok(PathBuf::from(argv0));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(argv0))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
        .ok_or_else(|| format!("cannot find script {argv0} in path"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn script(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join("check.sh");
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn system_programs_are_found_on_the_path_and_safe() {
        assert!(
            root(),
            "these tests judge files owned by root: run them as root"
        );
        let sh = check("sh", 0).unwrap();
        assert!(sh.is_absolute(), "{}", sh.display());
        assert_eq!(
            check("/bin/true", 0).unwrap(),
            PathBuf::from("/usr/bin/true")
        );
    }

    #[test]
    fn a_program_nowhere_on_the_path_is_refused_as_keepalived_does() {
        assert_eq!(check("[[", 0).unwrap_err(), "cannot find script [[ in path");
    }

    #[test]
    fn a_script_anyone_can_write_is_refused_naming_it() {
        assert!(
            root(),
            "these tests judge files owned by root: run them as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), 0o757);
        let err = check(path.to_str().unwrap(), 0).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "unsafe permissions found for script {}: writable by anyone",
                path.canonicalize().unwrap().display()
            )),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check(path.to_str().unwrap(), 0).is_ok());
    }

    #[test]
    fn a_writable_directory_above_the_script_is_refused_unless_sticky() {
        assert!(
            root(),
            "these tests judge files owned by root: run them as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), 0o755);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check(path.to_str().unwrap(), 0).unwrap_err();
        assert!(
            err.contains("(its directory") && err.contains("writable by anyone"),
            "{err}"
        );
        // Sticky, as /tmp: only the owner may replace an entry.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(check(path.to_str().unwrap(), 0).is_ok());
    }

    #[test]
    fn a_script_owned_by_another_user_is_refused_unless_it_runs_as_that_user() {
        assert!(
            root(),
            "these tests judge files owned by root: run them as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), 0o755);
        nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let err = check(path.to_str().unwrap(), 0).unwrap_err();
        assert!(err.contains("owned by uid 65534"), "{err}");
        assert!(check(path.to_str().unwrap(), 65534).is_ok());
    }
}
