//! Recovering a container's restart count from its log directory when the
//! runtime lost its state (upstream `calcRestartCountByLogDir`): log files
//! are named `<restartCount>.log` (rotated: `<n>.log.<suffix>`), so the
//! next instance's count is the highest `n` plus one.

use std::io;
use std::path::Path;

/// The restart count the next instance of the container whose logs are in
/// `dir` (`<logDir>/<ns>_<pod>_<uid>/<container>`) gets: 0 when the
/// directory is missing or holds no `<n>.log*` file, else the highest `n` + 1.
pub fn restart_count_from_log_dir(dir: &Path) -> io::Result<i32> {
    let mut count = 0;
    for entry in kubenode_fsutil::read_dir_if_present(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let digits: &str = &name[..name
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(name.len())];
        let rest = &name[digits.len()..];
        // Upstream matches `^(\d+)\.log(\..*)?` unanchored at the end: any `<n>.log` prefix.
        if digits.is_empty() || !rest.starts_with(".log") {
            continue;
        }
        if let Ok(n) = digits.parse::<i32>() {
            count = count.max(n.saturating_add(1));
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_file_names() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            restart_count_from_log_dir(&d.path().join("missing")).unwrap(),
            0
        );
        assert_eq!(restart_count_from_log_dir(d.path()).unwrap(), 0);
        for f in [
            "0.log",
            "1.log",
            "3.log.20240101-000000",
            "7.txt",
            "x.log",
            "12log",
            "99999999999.log",
        ] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        std::fs::create_dir(d.path().join("9.log")).unwrap();
        assert_eq!(restart_count_from_log_dir(d.path()).unwrap(), 4);
    }
}
