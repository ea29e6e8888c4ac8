//! Files only their owner may read: the development master key, API key and database password are secrets.

use std::path::Path;

use anyhow::Context;

/// Writes `contents` to `path`, readable and writable by its owner only (also when the file already existed).
pub fn write(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    // A file left by an older version keeps its mode on open: set it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    Ok(())
}

/// Makes an existing file readable by its owner only (one an older version wrote with the default mode).
pub fn tighten(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_are_written_for_their_owner_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secret_key");
        // A file an older version left readable by everyone is tightened when rewritten.
        std::fs::write(&path, b"old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        super::write(&path, b"new").expect("written");
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let fresh = dir.path().join("dev.json");
        super::write(&fresh, b"{}").expect("written");
        assert_eq!(std::fs::metadata(&fresh).expect("metadata").permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        super::tighten(&fresh).expect("tightened");
        assert_eq!(std::fs::metadata(&fresh).expect("metadata").permissions().mode() & 0o777, 0o600);
    }
}
